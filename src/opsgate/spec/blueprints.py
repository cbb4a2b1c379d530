"""Loading blueprints: YAML text → validated :class:`WorkflowSpec`, with every issue located.

A file holds one native blueprint, or, in the seed format, a ``workflows:`` mapping of several.
Each blueprint goes through structural validation (the pydantic model) and semantic inspection
(:func:`opsgate.spec.inspect.inspect_blueprint`) on the same raw data, so one pass reports every
problem. A blueprint is returned only if it has no errors; warnings are returned beside it.

The ``*_or_raise`` variants raise :class:`InvalidBlueprintError` carrying all issues instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from opsgate.errors import InvalidBlueprintError
from opsgate.spec.checks import read_text
from opsgate.spec.data import load_data
from opsgate.spec.facts import ActionSignature
from opsgate.spec.inspect import inspect_blueprint
from opsgate.spec.issues import Issue, Severity, has_errors
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.roles import RoleBook
from opsgate.spec.seed import is_seed, split_seed
from opsgate.spec.source import Document, YAMLSyntaxError, parse_yaml
from opsgate.spec.structure import describe, validate_model

Actions = Mapping[str, ActionSignature]

BLUEPRINT_HINT = "a blueprint is a mapping with at least name, version and steps"


def parse_blueprints(
    text: str,
    file: str,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> tuple[list[WorkflowSpec], list[Issue]]:
    """Every valid blueprint in ``text`` and every issue of the file, sorted by position.

    ``actions`` (the action registry) and ``roles`` enable the checks that need them.
    """
    try:
        document = parse_yaml(text, file)
    except YAMLSyntaxError as exc:
        return [], [exc.issue]
    views, issues = _blueprint_documents(document)
    specs = []
    for view in views:
        spec, found = _validate(view, actions, roles)
        issues += found
        if spec is not None:
            specs.append(spec)
    return specs, sorted(set(issues), key=_position)


def parse_blueprint(
    text: str,
    file: str,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> tuple[WorkflowSpec | None, list[Issue]]:
    """The one blueprint in ``text`` (``None`` if it has errors) and every issue."""
    specs, issues = parse_blueprints(text, file, actions, roles)
    if has_errors(issues):
        return None, issues
    if len(specs) != 1:
        names = ", ".join(spec.name for spec in specs)
        message = f"the file holds {len(specs)} blueprints ({names}); one was expected"
        hint = "load it with parse_blueprints, or keep one workflow per file"
        return None, [*issues, Issue(Severity.ERROR, message, file, 1, 1, hint=hint)]
    return specs[0], issues


def load_blueprints(
    path: Path,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> tuple[list[WorkflowSpec], list[Issue]]:
    """:func:`parse_blueprints` on a file; an unreadable file is an issue too."""
    text, issues = read_text(path)
    if text is None:
        return [], issues
    return parse_blueprints(text, str(path), actions, roles)


def load_blueprint(
    path: Path,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> tuple[WorkflowSpec | None, list[Issue]]:
    """:func:`parse_blueprint` on a file; an unreadable file is an issue too."""
    text, issues = read_text(path)
    if text is None:
        return None, issues
    return parse_blueprint(text, str(path), actions, roles)


def parse_blueprint_or_raise(
    text: str,
    file: str,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> WorkflowSpec:
    """The one blueprint in ``text``; raise :class:`InvalidBlueprintError` with every issue."""
    spec, issues = parse_blueprint(text, file, actions, roles)
    if spec is None:
        raise InvalidBlueprintError(file, issues)
    return spec


def load_blueprint_or_raise(
    path: Path,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> WorkflowSpec:
    """The one blueprint in the file; raise :class:`InvalidBlueprintError` with every issue."""
    spec, issues = load_blueprint(path, actions, roles)
    if spec is None:
        raise InvalidBlueprintError(str(path), issues)
    return spec


def load_blueprints_or_raise(
    path: Path,
    actions: Actions | None = None,
    roles: RoleBook | None = None,
) -> list[WorkflowSpec]:
    """Every blueprint in the file; raise :class:`InvalidBlueprintError` if any has errors."""
    specs, issues = load_blueprints(path, actions, roles)
    if has_errors(issues):
        raise InvalidBlueprintError(str(path), issues)
    return specs


def _blueprint_documents(document: Document) -> tuple[list[Document], list[Issue]]:
    if document.data is None:
        return [], [document.issue((), "the file is empty", BLUEPRINT_HINT)]
    if not isinstance(document.data, dict):
        message = f"a blueprint is a mapping, not {describe(document.data)}"
        return [], [document.issue((), message, BLUEPRINT_HINT)]
    if is_seed(document.data):
        return split_seed(document)
    return [document], []


def _validate(
    document: Document, actions: Actions | None, roles: RoleBook | None
) -> tuple[WorkflowSpec | None, list[Issue]]:
    data, issues = load_data(document)
    raw = {**document.data, "data": data} if "data" in document.data else document.data
    spec, found = validate_model(WorkflowSpec, raw, document)
    issues += found
    issues += inspect_blueprint(document, actions, roles)
    return (None if has_errors(issues) else spec), issues


def _position(issue: Issue) -> tuple[int, int, str, str, str]:
    return issue.line, issue.column, issue.path, str(issue.severity), issue.message

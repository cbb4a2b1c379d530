"""The documents opsgate serves, loaded together: blueprints by name, the policy set, the roles.

``validate_paths`` is ``opsgate validate``: it sorts files into blueprints, policy files and the
roles file by their content, checks blueprints against the roles (gates nobody could approve)
and the action registry, and groups every issue by file. ``load_catalog`` is the strict form the
server starts from: any error stops it with every issue listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from opsgate.actions.registry import ActionRegistry
from opsgate.errors import InvalidBlueprintError, InvalidPolicyError
from opsgate.spec.blueprints import load_blueprints
from opsgate.spec.data import DATA_FOLDER
from opsgate.spec.issues import Issue, Severity, has_errors
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.policies import PolicySet, load_policies
from opsgate.spec.roles import ROLES_FILE_NAMES, RoleBook, load_roles

YAML_SUFFIXES = (".yaml", ".yml")
_POLICY_KEYS = re.compile(r"^(rules|defaults)\s*:", re.MULTILINE)
_ROLES_KEYS = re.compile(r"^(principals|default_roles)\s*:", re.MULTILINE)


class DocumentKind(StrEnum):
    """What a YAML file holds, judged by its top-level keys."""

    #: A workflow (native format) or a ``workflows:`` mapping (seed format).
    BLUEPRINT = "blueprint"
    #: A policy file: ``rules:`` and/or ``defaults:``.
    POLICY = "policy"
    #: The roles file: ``principals:`` and ``default_roles:``.
    ROLES = "roles"


@dataclass(frozen=True, slots=True)
class FileReport:
    """The issues of one file, for ``opsgate validate``."""

    file: str
    kind: DocumentKind
    issues: tuple[Issue, ...] = ()

    @property
    def has_errors(self) -> bool:
        return has_errors(self.issues)

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "kind": str(self.kind),
            "valid": not self.has_errors,
            "issues": [issue.to_dict() for issue in self.issues],
        }


@dataclass(frozen=True, slots=True)
class Catalog:
    """Everything the server serves: valid blueprints by name, policies and roles."""

    blueprints: dict[str, WorkflowSpec] = field(default_factory=dict)
    policies: PolicySet = field(default_factory=PolicySet)

    @property
    def roles(self) -> RoleBook:
        return self.policies.roles


def classify(path: Path) -> DocumentKind:
    """Roles and policy files by name or top-level keys; anything else is a blueprint."""
    if path.name in ROLES_FILE_NAMES:
        return DocumentKind.ROLES
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return DocumentKind.BLUEPRINT
    if _POLICY_KEYS.search(text):
        return DocumentKind.POLICY
    if _ROLES_KEYS.search(text):
        return DocumentKind.ROLES
    return DocumentKind.BLUEPRINT


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[Issue]]:
    """The YAML files named or contained (recursively, sorted) in ``paths``, each once; in a
    directory, hidden files and folders and ``data/`` folders (data documents that blueprints
    load, see :mod:`opsgate.spec.data`) are left out."""
    files: dict[Path, Path] = {}
    issues: list[Issue] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in YAML_SUFFIXES
                and p.is_file()
                and not any(
                    part.startswith(".") or part == DATA_FOLDER
                    for part in p.relative_to(path).parent.parts
                )
                and not p.name.startswith(".")
            )
        elif path.is_file():
            found = [path]
        else:
            issues.append(
                Issue(
                    Severity.ERROR,
                    f"{path} does not exist",
                    str(path),
                    1,
                    1,
                    hint="name an existing file or directory",
                )
            )
            continue
        for file in found:
            files.setdefault(file.resolve(), file)
    return list(files.values()), issues


def validate_paths(paths: Sequence[Path], roles_file: Path | None = None) -> list[FileReport]:
    """Check every document under ``paths``; ``roles_file`` is used when none is among them."""
    files, issues = discover(paths)
    kinds = {file: classify(file) for file in files}
    roles_paths = [file for file in files if kinds[file] is DocumentKind.ROLES]
    book, found = _roles(
        roles_paths or ([roles_file] if roles_file and roles_file.is_file() else [])
    )
    issues += found
    policy_paths = [file for file in files if kinds[file] is DocumentKind.POLICY]
    if policy_paths:
        _, found = load_policies(policy_paths, book if book is not None else RoleBook())
        issues += found
    blueprint_paths = [file for file in files if kinds[file] is DocumentKind.BLUEPRINT]
    _, found = _blueprints(blueprint_paths, book)
    issues += found
    by_file: dict[str, list[Issue]] = {str(file): [] for file in files}
    for issue in issues:
        by_file.setdefault(issue.file, []).append(issue)
    kind_of = {str(file): kind for file, kind in kinds.items()}
    return [
        FileReport(name, kind_of.get(name, DocumentKind.BLUEPRINT), tuple(found_issues))
        for name, found_issues in by_file.items()
    ]


def load_catalog(blueprints: Path, policies: Path) -> Catalog:
    """The blueprints and policies to serve; raise with every issue if any file has an error."""
    policy_set, policy_issues = load_policies(policies)
    if has_errors(policy_issues):
        raise InvalidPolicyError(f"the policies in {policies}", policy_issues)
    files, issues = discover([blueprints])
    specs, found = _blueprints(files, policy_set.roles)
    issues += found
    if has_errors(issues):
        raise InvalidBlueprintError(f"the blueprints in {blueprints}", issues)
    return Catalog(blueprints={spec.name: spec for spec in specs}, policies=policy_set)


def _roles(paths: list[Path]) -> tuple[RoleBook | None, list[Issue]]:
    if not paths:
        return None, []
    book, issues = load_roles(paths[0])
    issues += [
        Issue(
            Severity.ERROR,
            f"more than one roles file: {paths[0]} and {extra}",
            str(extra),
            1,
            1,
            hint="keep the roles of a policy set in one roles.yaml",
        )
        for extra in paths[1:]
    ]
    return book, issues


def _blueprints(
    paths: list[Path], roles: RoleBook | None
) -> tuple[list[WorkflowSpec], list[Issue]]:
    """Every valid blueprint in ``paths``; a name defined twice is an error at the second."""
    actions = ActionRegistry.load().infos()
    specs: list[WorkflowSpec] = []
    issues: list[Issue] = []
    first_file: dict[str, Path] = {}
    for path in paths:
        found_specs, found = load_blueprints(path, actions, roles)
        issues += found
        for spec in found_specs:
            if spec.name in first_file:
                issues.append(
                    Issue(
                        Severity.ERROR,
                        f"blueprint {spec.name!r} is also defined in {first_file[spec.name]}",
                        str(path),
                        1,
                        1,
                        "name",
                        "give each blueprint a unique name",
                    )
                )
                continue
            first_file[spec.name] = path
            specs.append(spec)
    return specs, issues

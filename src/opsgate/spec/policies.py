"""Policy rules (``policies/*.yaml``): the models, the loader, and every check that can be made
before a rule is ever evaluated.

A policy set is the rules of every YAML file in the policy directory except ``roles.yaml``,
the roles from ``roles.yaml``, and the default effect for when no rule matches (a
``defaults:`` key in at most one policy file; ``allow`` when none sets it). Loading reports
every issue it finds, each located by file, line, column and path, so a person or an agent
can fix them all in one pass; :func:`load_policies_or_raise` raises when any is an error.

The gate a ``require_approval`` rule adds is an :class:`~opsgate.spec.model.ApprovalSpec`,
the same as a blueprint's own gate, so the engine handles both alike.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, get_args

from jinja2 import TemplateSyntaxError, nodes
from pydantic import BeforeValidator, Field, StrictBool

from opsgate.errors import InvalidPolicyError
from opsgate.expressions import ENVIRONMENT, references
from opsgate.spec.checks import Name, Prose, read_text
from opsgate.spec.issues import Issue, Path, Severity, has_errors
from opsgate.spec.model import (
    ApprovalSpec,
    ApproversSpec,
    Duration,
    Integer,
    Risk,
    SpecModel,
)
from opsgate.spec.roles import ROLES_FILE_NAMES, RoleBook, load_roles
from opsgate.spec.source import Document, YAMLSyntaxError, parse_yaml
from opsgate.spec.structure import describe, did_you_mean, invalid, validate_model
from opsgate.windows import WindowError, in_window, load_timezone, parse_window

logger = logging.getLogger(__name__)
PartT = TypeVar("PartT", bound=SpecModel)

#: What a ``match`` expression can read, with the fields of the roots whose shape opsgate
#: defines (``None``: any shape, such as a blueprint's own parameters).
MATCH_ROOTS: Mapping[str, frozenset[str] | None] = MappingProxyType(
    {
        "blueprint": frozenset(
            {"name", "version", "title", "description", "category", "risk", "tags", "owner"}
        ),
        "params": None,
        "principal": frozenset({"name", "roles"}),
        "targets": None,
        "now": None,
        "in_window": None,
        "step": frozenset({"id", "name", "description", "action", "idempotent"}),
    }
)

POLICY_HINT = "a policy file is a mapping with a rules: list (and optionally defaults:)"
MATCH_HINT = "match is one Jinja2 expression without {{ }}, e.g. params.environment == 'production'"
_IN_WINDOW = inspect.signature(in_window)
#: The fields of a rule that describe the gate it adds, named as in ApprovalSpec.
_APPROVAL_FIELDS = (
    "approvers",
    "quorum",
    "allow_self_approval",
    "timeout",
    "on_timeout",
    "escalate_to",
    "escalation_timeout",
)


class Effect(StrEnum):
    """What a matching rule does. A verdict takes the strongest: the order below."""

    #: Refuse the execution (or the step); ``reason`` tells the agent why.
    DENY = "deny"
    #: Add an approval gate: ``approvers`` must approve before it runs.
    REQUIRE_APPROVAL = "require_approval"
    #: Cap the fan-out: ``limits`` bounds targets, parallelism and concurrent executions.
    LIMIT = "limit"
    #: Allow explicitly; it matters when the default effect is ``deny``.
    ALLOW = "allow"


def _effect(value: object) -> object:
    if isinstance(value, str) and value in Effect._value2member_map_:
        return value
    choices = ", ".join(Effect)
    hint = did_you_mean(value, [effect.value for effect in Effect])
    raise invalid(f"must be one of {choices}, not {describe(value)}", hint)


EffectName = Annotated[Effect, BeforeValidator(_effect)]


class Limits(SpecModel):
    """Bounds on an execution; several matching limit rules combine to the smallest bound."""

    max_targets: Integer | None = Field(
        default=None, ge=1, description="targets one execution may address"
    )
    max_parallel: Integer | None = Field(
        default=None, ge=1, description="step runs of one step at the same time"
    )
    max_concurrent: Integer | None = Field(
        default=None, ge=1, description="executions of the same blueprint running at once"
    )


class Rule(SpecModel):
    """One policy rule. Without ``match`` it applies to everything."""

    id: Name = Field(description="unique across all policy files; verdicts name it")
    description: Prose | None = Field(default=None, description="what the rule is for")
    match: Prose | None = Field(
        default=None, description="a bare expression; the rule applies where it is true"
    )
    effect: EffectName = Field(description="deny, require_approval, limit or allow")
    reason: Prose | None = Field(
        default=None, description="why, for the agent that reads the verdict"
    )
    remedy: Prose | None = Field(default=None, description="what would be allowed instead")
    approvers: ApproversSpec | None = Field(
        default=None, description="who may approve the gate (require_approval)"
    )
    quorum: Integer = Field(default=1, ge=1, description="distinct approvals needed")
    allow_self_approval: StrictBool = Field(
        default=False, description="whether the requester may approve their own execution"
    )
    timeout: Duration | None = Field(
        default=None, description="how long the gate waits; default: as for blueprint gates"
    )
    on_timeout: Literal["reject", "escalate"] = Field(
        default="reject", description="at the deadline: reject, or escalate to escalate_to"
    )
    escalate_to: ApproversSpec | None = Field(
        default=None, description="who decides after an escalation"
    )
    escalation_timeout: Duration | None = Field(
        default=None, description="how long the escalated gate waits; default: timeout"
    )
    limits: Limits | None = Field(default=None, description="the bounds of a limit rule")

    @property
    def reads_step(self) -> bool:
        """Whether the rule is evaluated per step (its match reads ``step``), not per execution."""
        if self.match is None:
            return False
        return any(chain[0] == "step" for chain in references(self.match, expression=True))

    @property
    def gate(self) -> ApprovalSpec | None:
        """The approval gate a require_approval rule adds, as a blueprint would write it."""
        if self.effect is not Effect.REQUIRE_APPROVAL or self.approvers is None:
            return None
        given = self.model_fields_set.intersection(_APPROVAL_FIELDS)
        return ApprovalSpec.model_validate({name: getattr(self, name) for name in given})


class Defaults(SpecModel):
    """The effect when no rule matches: ``allow`` or ``deny`` (with the reason an agent reads)."""

    effect: EffectName = Field(default=Effect.ALLOW, description="allow or deny")
    reason: Prose | None = Field(default=None, description="why, when the default is deny")


class _PolicyDocument(SpecModel):
    """The top level only: rules and defaults are validated on their own, so that one broken
    part does not hide the issues of the others."""

    rules: list[Any] = Field(default_factory=list, description="the rules of this file")
    defaults: Any = Field(default=None, description="the effect when no rule matches")


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """One parsed policy file: the rules that validated, its defaults, and where ids are written."""

    document: Document
    rules: tuple[Rule, ...] = ()
    defaults: Defaults | None = None
    #: The path of the first ``id`` written for each rule id, for duplicate checks across files.
    rule_ids: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Everything the evaluator needs: the rules in file order, the roles, the default effect."""

    rules: tuple[Rule, ...] = ()
    roles: RoleBook = field(default_factory=RoleBook)
    defaults: Defaults = field(default_factory=Defaults)


PolicySource = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def load_policies_or_raise(source: PolicySource, roles: RoleBook | None = None) -> PolicySet:
    """Load a policy set for use; :class:`InvalidPolicyError` carries every issue if any is an
    error. Warnings are logged."""
    sources = _sources(source)
    policy_set, issues = load_policies(sources, roles)
    if has_errors(issues):
        where = ", ".join(str(path) for path in sources)
        raise InvalidPolicyError(f"the policy set in {where}", issues)
    for issue in issues:
        logger.warning("%s", issue)
    return policy_set


def load_policies(
    source: PolicySource, roles: RoleBook | None = None
) -> tuple[PolicySet, list[Issue]]:
    """Load a policy directory (or files and directories) and report every issue; never raises.

    ``roles`` replaces the roles file; without it the roles come from the ``roles.yaml`` among
    the sources, or beside the first directory or policy file. A set loaded with errors holds
    only the rules that validated: check the issues before using it.
    """
    directories, policy_paths, roles_paths, issues = _collect(source)
    book = roles
    if roles is None:
        book, found = _load_roles_of(directories, policy_paths, roles_paths)
        issues += found
    files: list[PolicyFile] = []
    for path in policy_paths:
        text, found = read_text(path)
        issues += found
        if text is not None:
            parsed, found = parse_policy_file(text, str(path), book)
            files.append(parsed)
            issues += found
    issues += _cross_file_issues(files)
    defaults = next((file.defaults for file in files if file.defaults is not None), Defaults())
    rules = tuple(rule for file in files for rule in file.rules)
    return PolicySet(rules, book if book is not None else RoleBook(), defaults), issues


def parse_policy_file(
    text: str, file: str, roles: RoleBook | None = None
) -> tuple[PolicyFile, list[Issue]]:
    """Validate one policy file; with ``roles``, approvers and role names are checked too."""
    try:
        document = parse_yaml(text, file)
    except YAMLSyntaxError as exc:
        return PolicyFile(Document(file, None)), [exc.issue]
    data = document.data
    if not isinstance(data, dict) or not data:
        return PolicyFile(document), [_not_a_policy_file(document)]
    _, issues = validate_model(_PolicyDocument, data, document)
    defaults = None
    if data.get("defaults") is not None:
        defaults, found = _validate_part(Defaults, data["defaults"], document, ("defaults",))
        issues += found
        if defaults is not None:
            issues += _located(document, ("defaults",), _defaults_findings(defaults))
    raw_rules = data["rules"] if isinstance(data.get("rules"), list) else []
    if not raw_rules and defaults is None:
        issues.append(
            document.issue(("rules",), "the file defines no rules", POLICY_HINT, Severity.WARNING)
        )
    rules: list[Rule] = []
    rule_ids: dict[str, Path] = {}
    for index, raw in enumerate(raw_rules):
        path: Path = ("rules", index)
        rule, found = _validate_part(Rule, raw, document, path)
        issues += found
        if isinstance(raw, dict):
            issues += _id_issues(document, path, raw.get("id"), rule_ids)
            match = raw.get("match")
            if isinstance(match, str) and match.strip():  # else the model reports it
                issues += _check_match(document, (*path, "match"), match, roles)
        if rule is not None:
            rules.append(rule)
            findings = [*_effect_findings(rule), *_gate_findings(rule, roles)]
            issues += _located(document, path, findings)
    return PolicyFile(document, tuple(rules), defaults, rule_ids), issues


def _not_a_policy_file(document: Document) -> Issue:
    if document.data is None or document.data == {}:
        return document.issue(
            (), "empty policy file: it defines no rules", POLICY_HINT, Severity.WARNING
        )
    return document.issue(
        (), f"a policy file is a mapping, not {describe(document.data)}", POLICY_HINT
    )


def _validate_part(
    model: type[PartT], raw: object, document: Document, path: Path
) -> tuple[PartT | None, list[Issue]]:
    """Validate a mapping inside the file (a rule, the defaults); say so if it is not one."""
    if isinstance(raw, dict):
        return validate_model(model, raw, document, path)
    last = path[-1]
    subject = f"item {last} of {path[-2]!r}" if isinstance(last, int) else repr(last)
    return None, [document.issue(path, f"{subject} must be a mapping, not {describe(raw)}")]


def _check_match(
    document: Document, path: Path, text: str, roles: RoleBook | None = None
) -> list[Issue]:
    """Check a ``match`` expression: syntax, the names it reads, literal windows and roles."""
    if text.lstrip().startswith(("{{", "{%")):
        return [document.issue(path, "match is a bare expression, not a template", MATCH_HINT)]
    try:
        ENVIRONMENT.compile_expression(text)  # exactly what the evaluator will compile
        tree = ENVIRONMENT.parse("{{ " + text + " }}")
    except TemplateSyntaxError as exc:
        message = (exc.message or str(exc)).replace("'end of template'", "end of expression")
        problem = f"invalid match expression: {message}"
        return [document.issue(path, problem, _syntax_hint(text))]
    except RecursionError:
        return [document.issue(path, "match expression nests too deeply", MATCH_HINT)]
    return [
        *_name_issues(document, path, text),
        *_window_issues(document, path, tree),
        *_literal_issues(document, path, tree, roles),
    ]


def _syntax_hint(text: str) -> str:
    """A did-you-mean for an unknown filter or test, else how to write a match."""
    try:
        tree = ENVIRONMENT.parse("{{ " + text + " }}")
    except (TemplateSyntaxError, RecursionError):
        return MATCH_HINT
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = ENVIRONMENT.filters if isinstance(node, nodes.Filter) else ENVIRONMENT.tests
        if node.name not in known:
            return did_you_mean(node.name, known) or MATCH_HINT
    return MATCH_HINT


def _name_issues(document: Document, path: Path, text: str) -> Iterator[Issue]:
    """Unknown roots (``parms``) and unknown fields of known roots (``blueprint.rsik``)."""
    reported: set[tuple[str, ...]] = set()
    for chain in sorted(references(text, expression=True)):
        root = chain[0]
        fields = MATCH_ROOTS.get(root)
        if root not in MATCH_ROOTS:
            key: tuple[str, ...] = (root,)
            message = f"unknown name {root!r} in match"
            hint = did_you_mean(root, MATCH_ROOTS) or "match can read " + ", ".join(MATCH_ROOTS)
        elif fields is not None and len(chain) > 1 and chain[1] not in fields:
            key = chain[:2]
            message = f"{root} has no field {chain[1]!r}"
            hint = did_you_mean(chain[1], fields) or f"{root} has " + ", ".join(sorted(fields))
        else:
            continue
        if key not in reported:
            reported.add(key)
            yield document.issue(path, message, hint)


def _window_issues(document: Document, path: Path, tree: nodes.Template) -> Iterator[Issue]:
    """``in_window(now, 'SPEC', 'TZ')`` with literal arguments is checked now, not at run time."""
    for call in tree.find_all(nodes.Call):
        if not isinstance(call.node, nodes.Name) or call.node.name != "in_window":
            continue
        if call.dyn_args is not None or call.dyn_kwargs is not None:
            continue
        keywords = {keyword.key: keyword.value for keyword in call.kwargs}
        try:
            _IN_WINDOW.bind_partial(*call.args, **keywords)  # a wrong name explains a missing one
            bound = _IN_WINDOW.bind(*call.args, **keywords)
        except TypeError as exc:
            yield document.issue(path, f"in_window(): {exc}", "call in_window(now, SPEC, TIMEZONE)")
            continue
        if isinstance(bound.arguments["now"], nodes.Const):
            yield document.issue(
                path,
                "in_window(): the first argument is the instant to check",
                "pass now: in_window(now, SPEC, TIMEZONE)",
            )
        for name, check in (("spec", parse_window), ("timezone", load_timezone)):
            argument = bound.arguments[name]
            if isinstance(argument, nodes.Const):
                try:
                    check(argument.value)
                except WindowError as exc:
                    yield document.issue(path, f"in_window(): {exc.problem}", exc.hint)


def _literal_issues(
    document: Document, path: Path, tree: nodes.Template, roles: RoleBook | None
) -> Iterator[Issue]:
    """Warn about literals that a field never holds: a misspelt role or risk never matches."""
    vocabularies: dict[tuple[str, str], tuple[str, Sequence[str]]] = {
        ("blueprint", "risk"): ("risk level", get_args(Risk)),
    }
    if roles is not None:
        vocabularies["principal", "roles"] = ("role", sorted(roles.known_roles))
    for compared, literal in _compared_literals(tree):
        if compared not in vocabularies:
            continue
        what, known = vocabularies[compared]
        if literal not in known:
            hint = did_you_mean(literal, known) or f"known {what}s: " + ", ".join(known)
            yield document.issue(path, f"{literal!r} is not a known {what}", hint, Severity.WARNING)


def _compared_literals(tree: nodes.Template) -> Iterator[tuple[tuple[str, str], str]]:
    """``(("blueprint", "risk"), "high")`` for ``blueprint.risk == 'high'``, ``... in [...]``."""
    for compare in tree.find_all(nodes.Compare):
        left = compare.expr
        for operand in compare.ops:
            right = operand.expr
            if operand.op in ("eq", "ne", "in", "notin"):
                for one, other in ((left, right), (right, left)):
                    compared = _root_field(one)
                    if compared is not None:
                        yield from ((compared, literal) for literal in _string_literals(other))
            left = right


def _root_field(node: nodes.Node) -> tuple[str, str] | None:
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return node.node.name, node.attr
    return None


def _string_literals(node: nodes.Node) -> list[str]:
    items = node.items if isinstance(node, nodes.List | nodes.Tuple) else [node]
    return [
        item.value
        for item in items
        if isinstance(item, nodes.Const) and isinstance(item.value, str)
    ]


def _id_issues(
    document: Document, path: Path, rule_id: object, rule_ids: dict[str, Path]
) -> list[Issue]:
    if not isinstance(rule_id, str) or not rule_id.strip():
        return []
    if rule_id in rule_ids:
        return [_duplicate(document, (*path, "id"), rule_id, document, rule_ids[rule_id])]
    rule_ids[rule_id] = (*path, "id")
    return []


def _duplicate(document: Document, path: Path, rule_id: str, first: Document, at: Path) -> Issue:
    message = f"duplicate rule id {rule_id!r}: first defined at {_where(first, at)}"
    return document.issue(path, message, "rule ids are unique across all policy files")


def _where(document: Document, path: Path) -> str:
    line, column = document.locate(path)
    return f"{document.file}:{line}:{column}"


class _Finding(NamedTuple):
    """An issue found inside a rule, its path relative to the rule; located by the caller."""

    where: Path
    message: str
    hint: str | None = None
    severity: Severity = Severity.ERROR


def _located(document: Document, base: Path, findings: Iterable[_Finding]) -> list[Issue]:
    return [document.issue((*base, *f.where), f.message, f.hint, f.severity) for f in findings]


def _effect_findings(rule: Rule) -> Iterator[_Finding]:
    """What each effect needs, and fields that would have no effect on it."""
    effect, given = rule.effect, rule.model_fields_set
    if effect in (Effect.DENY, Effect.REQUIRE_APPROVAL) and rule.reason is None:
        yield _Finding(
            ("reason",),
            f"a {effect} rule needs a reason: it is what the agent reads",
            "say why, and what would be allowed instead",
        )
    if effect is not Effect.REQUIRE_APPROVAL:
        for name in sorted(given.intersection(_APPROVAL_FIELDS)):
            yield _Finding(
                (name,),
                f"{name} has no effect when effect is {effect}",
                "only require_approval rules add an approval gate",
                Severity.WARNING,
            )
    if effect is not Effect.LIMIT:
        if "limits" in given:
            yield _Finding(
                ("limits",),
                f"limits has no effect when effect is {effect}",
                "use effect: limit",
                Severity.WARNING,
            )
    elif rule.limits is None:
        yield _Finding(
            ("limits",), "a limit rule needs limits", "limits: {max_targets: 20, max_parallel: 5}"
        )
    elif not rule.limits.model_fields_set:
        yield _Finding(
            ("limits",), "limits must set at least one of " + ", ".join(Limits.model_fields)
        )


def _gate_findings(rule: Rule, roles: RoleBook | None) -> Iterator[_Finding]:
    """The gate a require_approval rule adds: who could approve, and its escalation."""
    if rule.effect is not Effect.REQUIRE_APPROVAL:
        return
    if rule.approvers is None:
        yield _Finding(
            ("approvers",),
            "a require_approval rule needs approvers",
            "approvers: {roles: [ops-manager]}",
        )
    else:
        yield from _approver_findings("approvers", rule.approvers, rule.quorum, roles)
    if rule.escalate_to is not None:
        yield from _approver_findings("escalate_to", rule.escalate_to, rule.quorum, roles)
    if rule.on_timeout == "escalate":
        if rule.escalate_to is None:
            yield _Finding(
                ("on_timeout",),
                "on_timeout: escalate needs escalate_to",
                "escalate_to: {roles: [security]}",
            )
        return
    for name in ("escalate_to", "escalation_timeout"):
        if name in rule.model_fields_set:
            yield _Finding(
                (name,),
                f"{name} has no effect unless on_timeout is escalate",
                "set on_timeout: escalate",
                Severity.WARNING,
            )


def _approver_findings(
    name: str, approvers: ApproversSpec, quorum: int, roles: RoleBook | None
) -> Iterator[_Finding]:
    """Whether anybody could decide the gate: roles somebody holds, enough people for quorum."""
    if not approvers.roles and not approvers.principals:
        yield _Finding(
            (name,),
            f"{name} must name at least one role or principal",
            "{roles: [ops-manager]} or {principals: [bob]}",
        )
        return
    if roles is None:
        return
    anyone = False
    possible = set(approvers.principals)
    for index, role in enumerate(approvers.roles):
        holders = roles.holders(role)
        if holders is None:
            anyone = True
            yield _Finding(
                (name, "roles", index),
                f"everybody holds the default role {role!r}, so anyone could approve",
                "name a role that only approvers hold",
                Severity.WARNING,
            )
        elif not holders:
            yield _Finding(
                (name, "roles", index),
                f"nobody could approve: no principal holds role {role!r}",
                did_you_mean(role, roles.known_roles)
                or "give the role to a principal in roles.yaml",
            )
        possible.update(holders or ())
    for index, principal in enumerate(approvers.principals):
        if principal not in roles.principals:
            yield _Finding(
                (name, "principals", index),
                f"principal {principal!r} is not in the roles file",
                did_you_mean(principal, roles.principals) or "add it to roles.yaml",
                Severity.WARNING,
            )
    if not anyone and possible and quorum > len(possible):
        yield _Finding(
            ("quorum",),
            f"quorum {quorum} cannot be met by {name}: only {len(possible)} "
            f"principal(s) could approve ({', '.join(sorted(possible))})",
            "lower the quorum or add approvers",
        )


def _defaults_findings(defaults: Defaults) -> Iterator[_Finding]:
    if defaults.effect not in (Effect.ALLOW, Effect.DENY):
        yield _Finding(
            ("effect",),
            f"the default effect must be allow or deny, not {defaults.effect}",
            "for an approval or a limit everywhere, write a rule without match",
        )
    if defaults.effect is Effect.DENY and defaults.reason is None:
        yield _Finding(
            ("reason",),
            "a deny default needs a reason: it is what the agent reads",
            "say which rules allow what",
        )


def _cross_file_issues(files: list[PolicyFile]) -> list[Issue]:
    """Rule ids unique across files; defaults set in one file only."""
    issues: list[Issue] = []
    seen: dict[str, tuple[Document, Path]] = {}
    defaults_in: Document | None = None
    for file in files:
        for rule_id, path in file.rule_ids.items():
            if rule_id in seen:
                issues.append(_duplicate(file.document, path, rule_id, *seen[rule_id]))
            else:
                seen[rule_id] = (file.document, path)
        if file.defaults is None:
            continue
        if defaults_in is not None:
            message = f"defaults are set twice: first in {_where(defaults_in, ('defaults',))}"
            issues.append(
                file.document.issue(("defaults",), message, "set defaults in one policy file")
            )
        else:
            defaults_in = file.document
    return issues


def _collect(
    source: PolicySource,
) -> tuple[list[FilePath], list[FilePath], list[FilePath], list[Issue]]:
    """Directories, policy files and roles files among the sources (directories expanded)."""
    items = _sources(source)
    directories: list[FilePath] = []
    files: dict[FilePath, FilePath] = {}
    issues: list[Issue] = []
    for item in items:
        if item.is_dir():
            directories.append(item)
            found = sorted(path for path in item.iterdir() if _is_policy_document(path))
        elif item.is_file():
            found = [item]
        else:
            issues.append(
                Issue(
                    Severity.ERROR,
                    f"policy path {item} not found",
                    str(item),
                    1,
                    1,
                    hint="point OPSGATE_POLICIES at the policy directory",
                )
            )
            continue
        files.update((path.resolve(), path) for path in found if path.resolve() not in files)
    roles_paths = [path for path in files.values() if path.name in ROLES_FILE_NAMES]
    policy_paths = [path for path in files.values() if path.name not in ROLES_FILE_NAMES]
    if not policy_paths and not issues:
        where = str(items[0]) if items else "."
        issues.append(
            Issue(
                Severity.WARNING,
                "no policy files: the default effect (allow) applies to every execution",
                where,
                1,
                1,
                hint="add rules in policies/*.yaml",
            )
        )
    return directories, policy_paths, roles_paths, issues


def _is_policy_document(path: FilePath) -> bool:
    return path.suffix in (".yaml", ".yml") and not path.name.startswith(".") and path.is_file()


def _load_roles_of(
    directories: list[FilePath], policy_paths: list[FilePath], roles_paths: list[FilePath]
) -> tuple[RoleBook | None, list[Issue]]:
    """The roles file among the sources, else the one beside them; one roles file only."""
    if roles_paths:
        path = roles_paths[0]
    elif directories or policy_paths:
        beside = directories[0] if directories else policy_paths[0].parent
        candidates = [beside / name for name in ROLES_FILE_NAMES]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
    else:
        return None, []
    book, issues = load_roles(path)
    issues += [
        Issue(
            Severity.ERROR,
            f"more than one roles file: {path} and {extra}",
            str(extra),
            1,
            1,
            hint="keep the roles of a policy set in one roles.yaml",
        )
        for extra in roles_paths[1:]
    ]
    return book, issues


def _sources(source: PolicySource) -> list[FilePath]:
    if isinstance(source, str | os.PathLike):
        return [FilePath(source)]
    return [FilePath(item) for item in source]

"""The seed format (TailOpsMCP's ``workflows:`` files), rewritten into the native format.

A seed file maps names to workflows and spells things its own way: ``type`` for the action,
``dependencies``, ``timeout_minutes``, ``retry_policy``, ``requires_approval`` with top-level
``approvals``, ``rollback_plan.actions``, ``validation: {min, max}``, ``choices``. Each workflow
becomes a native blueprint document whose aliases point every rewritten path back at what was
written, so the issues found later are located in the seed file as its author wrote it. Native
fields are accepted inside seed workflows too, and keys the seed format has but opsgate does
not use are reported as warnings, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from opsgate.spec.issues import Issue, Path, Severity
from opsgate.spec.source import Document, path_part
from opsgate.spec.structure import describe, did_you_mean

SEED_KEY = "workflows"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_ALIASES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}


def is_seed(data: Any) -> bool:
    """Whether parsed YAML is a seed file: a ``workflows:`` mapping rather than one blueprint."""
    return isinstance(data, dict) and SEED_KEY in data and "steps" not in data


def split_seed(document: Document) -> tuple[list[Document], list[Issue]]:
    """One native blueprint document per seed workflow, and the issues of the rewrite."""
    issues = [
        document.issue(
            (path_part(key),),
            f"unknown top-level field {str(key)!r} in a seed file",
            "a seed file holds only 'workflows:', a mapping of names to workflows",
        )
        for key in document.data
        if key != SEED_KEY
    ]
    workflows = document.data[SEED_KEY]
    if not isinstance(workflows, dict) or not workflows:
        message = "'workflows' must be a mapping of blueprint names to workflows"
        return [], [*issues, document.issue((SEED_KEY,), message, "write workflows: {name: {...}}")]
    views = []
    for name, raw in workflows.items():
        if not isinstance(raw, dict):
            message = f"workflow {str(name)!r} must be a mapping, not {describe(raw)}"
            issues.append(document.issue((SEED_KEY, path_part(name)), message))
            continue
        rewrite = _Rewrite(document, (SEED_KEY, path_part(name)))
        data = rewrite.workflow(name, raw)
        views.append(Document(document.file, data, document.positions, rewrite.aliases))
        issues += rewrite.issues
    return views, issues


#: Rewrites one seed key: (rewrite, native mapping being built, its path, value, written path).
_Rule = Callable[["_Rewrite", dict[Any, Any], Path, Any, Path], None]
#: Turns a seed value into its native form: (rewrite, value, native path, written path).
_Shape = Callable[["_Rewrite", Any, Path, Path], Any]


class _Rewrite:
    """The rewrite of one seed workflow: its native data, aliases and issues."""

    def __init__(self, document: Document, base: Path) -> None:
        self.document = document
        self.base = base
        self.aliases: dict[Path, Path] = {(): base}
        self.issues: list[Issue] = []
        self.parameter_names: set[str] = set()

    def workflow(self, name: Any, raw: dict[Any, Any]) -> dict[Any, Any]:
        parameters = raw.get("parameters")
        if isinstance(parameters, dict):
            self.parameter_names = {key for key in parameters if isinstance(key, str)}
        out: dict[Any, Any] = {}
        self.put(out, ("name",), name, self.base)
        rest = {key: value for key, value in raw.items() if key != "approvals"}
        self.mapping(rest, (), self.base, _WORKFLOW_RULES, out)
        if "approvals" in raw:
            self.approvals(out, raw["approvals"], (*self.base, "approvals"))
        return out

    def mapping(
        self,
        raw: Any,
        new: Path,
        old: Path,
        rules: Mapping[str, _Rule],
        out: dict[Any, Any] | None = None,
    ) -> Any:
        """Rewrite the keys of ``raw`` by ``rules`` (others kept as they are) into ``out``."""
        if not isinstance(raw, dict):
            return raw
        out = {} if out is None else out
        for key, value in raw.items():
            part = path_part(key)
            rule = rules.get(key) if isinstance(key, str) else None
            if rule is None:
                self.put(out, (*new, part), value, (*old, part))
            else:
                rule(self, out, new, value, (*old, part))
        return out

    def put(self, out: dict[Any, Any], new: Path, value: Any, old: Path) -> None:
        """Set ``new``'s last key in ``out``, remembering that it was written at ``old``."""
        key = new[-1]
        if key in out:
            first = self.aliases.get(new, new)[-1]
            message = f"{str(old[-1])!r} and {str(first)!r} both set {str(key)!r}"
            self.issues.append(self.document.issue(old, message, "keep only one of them"))
            return
        out[key] = value
        self.aliases[new] = old

    def warn(self, old: Path, hint: str) -> None:
        message = f"{str(old[-1])!r} is not used by opsgate and is ignored"
        self.issues.append(self.document.issue(old, message, hint, Severity.WARNING))

    def condition(self, value: Any) -> Any:
        """Seed ``conditions`` (a list, bare parameter names allowed) as one ``when``."""
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value) or not value:
            return value
        parts = [f"params.{c}" if c in self.parameter_names else c.strip() for c in value]
        return parts[0] if len(parts) == 1 else " and ".join(f"({p})" for p in parts)

    def step(self, raw: Any, new: Path, old: Path) -> Any:
        if not isinstance(raw, dict):
            return raw
        plain = {key: value for key, value in raw.items() if key not in _GATE_KEYS}
        out = self.mapping(plain, new, old, _STEP_RULES)
        wanted = [key for key in ("requires_approval", "approval_required") if key in raw]
        approvers = raw.get("approvers")
        for key in wanted:
            self.gate(out, new, raw[key], approvers, (*old, key))
        if "approvers" in raw and not any(raw[key] is True for key in wanted):
            self.warn((*old, "approvers"), "approvers apply only with requires_approval: true")
        return out

    def gate(self, out: dict[Any, Any], new: Path, wanted: Any, approvers: Any, old: Path) -> None:
        """``requires_approval: true`` (with step-level ``approvers``) as a native gate."""
        if not isinstance(wanted, bool):
            message = f"{str(old[-1])!r} must be true or false"
            self.issues.append(self.document.issue(old, message))
            return
        if wanted:
            gate: dict[str, Any] = {}
            self.put(out, (*new, "approval"), gate, old)
            approvers_new, approvers_old = (*new, "approval", "approvers"), (*old[:-1], "approvers")
            if approvers is None:  # an approvals entry may name them; if not, say where they go
                self.aliases[approvers_new] = approvers_old
            else:
                self.put(gate, approvers_new, {"roles": approvers}, approvers_old)

    def approvals(self, out: dict[Any, Any], value: Any, old: Path) -> None:
        """Top-level seed ``approvals`` merged into the gates of the steps they name."""
        if not isinstance(value, list):
            hint = "write approvals: [{step: <step id>, required_approvers: [<role>]}]"
            self.issues.append(self.document.issue(old, "'approvals' must be a list", hint))
            return
        steps = out["steps"] if isinstance(out.get("steps"), list) else []
        index: dict[str, int] = {}
        for number, step in enumerate(steps):
            if isinstance(step, dict) and isinstance(step.get("id"), str):
                index.setdefault(step["id"], number)
        for number, entry in enumerate(value):
            self.approval(steps, index, entry, (*old, number))

    def approval(self, steps: list[Any], index: dict[str, int], entry: Any, old: Path) -> None:
        if not isinstance(entry, dict):
            self.issues.append(self.document.issue(old, "each approval must be a mapping"))
            return
        key = "step" if "step" in entry or "step_id" not in entry else "step_id"
        target = entry.get(key)
        if not isinstance(target, str) or target not in index:
            self.issues.append(self._unknown_step(target, index, (*old, key)))
            return
        new: Path = ("steps", index[target], "approval")
        step = steps[index[target]]
        if "approval" not in step:
            step["approval"] = {}
            self.aliases[new] = old
        if isinstance(step["approval"], dict):  # else structural validation reports it
            rest = {k: v for k, v in entry.items() if k != key}
            self.mapping(rest, new, old, _APPROVAL_RULES, step["approval"])

    def _unknown_step(self, target: Any, index: dict[str, int], old: Path) -> Issue:
        if target is None:
            return self.document.issue(old[:-1], "approval names no step", "add step: <step id>")
        if not isinstance(target, str):
            return self.document.issue(
                old, f"'{old[-1]}' must be a step id, not {describe(target)}"
            )
        hint = did_you_mean(target, index) or "steps: " + ", ".join(index)
        return self.document.issue(old, f"approval for unknown step {target!r}", hint)


def _field(name: str, shape: _Shape | None = None) -> _Rule:
    """A seed key that becomes the native key ``name``, its value reshaped by ``shape``."""

    def rule(rewrite: _Rewrite, out: dict[Any, Any], new: Path, value: Any, old: Path) -> None:
        native = (*new, name)
        rewrite.put(
            out, native, value if shape is None else shape(rewrite, value, native, old), old
        )

    return rule


def _with_unit(unit: str) -> _Shape:
    """A bare number in ``unit`` (seed ``timeout_minutes: 20``) as a duration (``20m``)."""

    def shape(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value}{unit}"
        return value

    return shape


def _mapping_of(rules: Mapping[str, _Rule]) -> _Shape:
    def shape(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
        return rewrite.mapping(value, new, old, rules)

    return shape


def _list_of(item: Callable[[_Rewrite, Any, Path, Path], Any]) -> _Shape:
    def shape(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
        if not isinstance(value, list):
            return value
        return [item(rewrite, entry, (*new, i), (*old, i)) for i, entry in enumerate(value)]

    return shape


def _values_of(rules: Mapping[str, _Rule]) -> _Shape:
    def shape(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            key: rewrite.mapping(entry, (*new, path_part(key)), (*old, path_part(key)), rules)
            for key, entry in value.items()
        }

    return shape


def _ignored(hint: str) -> _Rule:
    def rule(rewrite: _Rewrite, out: dict[Any, Any], new: Path, value: Any, old: Path) -> None:
        rewrite.warn(old, hint)

    return rule


def _dropped(rewrite: _Rewrite, out: dict[Any, Any], new: Path, value: Any, old: Path) -> None:
    """A label with no native counterpart and no effect (a rollback action's id)."""


def _flattened(rules: Mapping[str, _Rule]) -> _Rule:
    """A nested seed mapping (``validation: {min, max}``) whose keys move one level up."""

    def rule(rewrite: _Rewrite, out: dict[Any, Any], new: Path, value: Any, old: Path) -> None:
        if isinstance(value, dict):
            rewrite.mapping(value, new, old, rules, out)
        else:
            rewrite.put(out, (*new, old[-1]), value, old)

    return rule


def _type_alias(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
    return _TYPE_ALIASES.get(value, value) if isinstance(value, str) else value


def _condition(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
    return rewrite.condition(value)


def _step(rewrite: _Rewrite, value: Any, new: Path, old: Path) -> Any:
    return rewrite.step(value, new, old)


def _required_approvers(
    rewrite: _Rewrite, out: dict[Any, Any], new: Path, value: Any, old: Path
) -> None:
    """Every listed approver must approve: the roles, with a quorum of one per entry."""
    rewrite.put(out, (*new, "approvers"), {"roles": value}, old)
    if isinstance(value, list) and value and "quorum" not in out:
        rewrite.put(out, (*new, "quorum"), len(value), old)


def _rollback_plan(
    rewrite: _Rewrite, out: dict[Any, Any], new: Path, value: Any, old: Path
) -> None:
    """``rollback_plan: {enabled, conditions, actions}``; enabled is the workflow's switch."""
    if isinstance(value, dict) and "enabled" in value:
        rewrite.put(out, (*new, "rollback_on_failure"), value["enabled"], (*old, "enabled"))
        value = {key: entry for key, entry in value.items() if key != "enabled"}
    _field("rollback_plan", _mapping_of(_PLAN_RULES))(rewrite, out, new, value, old)


_DURATIONS: dict[str, _Rule] = {
    "timeout": _field("timeout", _with_unit("s")),
    "timeout_seconds": _field("timeout", _with_unit("s")),
    "timeout_minutes": _field("timeout", _with_unit("m")),
    "timeout_hours": _field("timeout", _with_unit("h")),
}
_RETRY_RULES: dict[str, _Rule] = {
    "initial_delay": _field("initial_interval", _with_unit("s")),
    "initial_delay_seconds": _field("initial_interval", _with_unit("s")),
    "initial_delay_minutes": _field("initial_interval", _with_unit("m")),
    "backoff_factor": _field("backoff_coefficient"),
    "max_delay": _field("max_interval", _with_unit("s")),
    "max_delay_seconds": _field("max_interval", _with_unit("s")),
    "max_delay_minutes": _field("max_interval", _with_unit("m")),
    "retry_on_exceptions": _field("retry_on"),
}
_ACTION_RULES: dict[str, _Rule] = {
    "type": _field("action"),
    "step_type": _field("action"),
    "parameters": _field("with"),
    "retry_policy": _field("retry", _mapping_of(_RETRY_RULES)),
    **_DURATIONS,
}
_COMPENSATION_RULES: dict[str, _Rule] = {**_ACTION_RULES, "id": _dropped, "action_id": _dropped}
_PLAN_ACTION_RULES: dict[str, _Rule] = {**_ACTION_RULES, "action_id": _field("id")}
_GATE_KEYS = frozenset({"requires_approval", "approval_required", "approvers"})
_STEP_RULES: dict[str, _Rule] = {
    **_ACTION_RULES,
    "step_id": _field("id"),
    "dependencies": _field("depends_on"),
    "conditions": _field("when", _condition),
    "preconditions": _field("when", _condition),
    "rollback_action": _field("rollback", _mapping_of(_COMPENSATION_RULES)),
    "validation_function": _ignored("express the check as an assert step"),
}
_VALIDATION_RULES: dict[str, _Rule] = {"choices": _field("enum")}
_PARAMETER_RULES: dict[str, _Rule] = {
    "type": _field("type", _type_alias),
    "choices": _field("enum"),
    "sensitive": _field("secret"),
    "validation": _flattened(_VALIDATION_RULES),
}
_APPROVAL_RULES: dict[str, _Rule] = {
    "required_approvers": _required_approvers,
    "description": _field("message"),
    "timeout_minutes": _field("timeout", _with_unit("m")),
    "timeout_hours": _field("timeout", _with_unit("h")),
    "escalation_rules": _ignored("use on_timeout: escalate and escalate_to in the step's approval"),
}
_PLAN_RULES: dict[str, _Rule] = {
    "actions": _field("on_failure", _list_of(_mapping_of(_PLAN_ACTION_RULES))),
    "conditions": _ignored("the rollback plan runs on every failure; remove 'conditions'"),
}
_WORKFLOW_RULES: dict[str, _Rule] = {
    "name": _field("title"),
    "parameters": _field("parameters", _values_of(_PARAMETER_RULES)),
    "steps": _field("steps", _list_of(_step)),
    "rollback_plan": _rollback_plan,
    "estimated_duration": _field("estimated_duration", _with_unit("s")),
    "estimated_duration_minutes": _field("estimated_duration", _with_unit("m")),
    "resource_requirements": _ignored(
        "opsgate reserves no resources; describe them in 'documentation' or use 'concurrency'"
    ),
    "prerequisites": _ignored("express prerequisites as assert or health_check steps"),
}

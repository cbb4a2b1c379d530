"""Checks of templates and conditions: their syntax, their kind, and every name they read.

Templates may use these names (the *roots*):

- ``params``: the run's parameters (``params.service``);
- ``steps``: earlier steps, ``steps.<id>.outputs.<name>`` (only steps this one depends on);
- ``approvals``: decided gates, ``approvals.<step id>`` (the step itself or earlier ones);
- ``item``: the current element of a ``for_each`` fan-out;
- ``target``: the current target of ``for_each: targets`` (``target.address``, ``target.labels``);
- ``targets``: every target of the execution, in steps (not where they are chosen);
- ``result``: the action's result, in the step's own ``outputs`` only;
- ``execution``: the running execution (``execution.id``, ``.workflow``, ``.requested_by``);
- ``now``: the current time (aware UTC);
- and the expression environment's functions, such as ``in_window``.

Where each root is defined is decided by a *scope* per place: a step's ``with`` sees what its
fan-out and upstream steps provide, its ``when`` is evaluated once before the fan-out and the
gate, the blueprint's ``targets`` and locks are rendered before any step has run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, get_args, get_origin

from opsgate.expressions import (
    ENVIRONMENT,
    Reference,
    check_expression,
    check_template,
    is_template,
    references,
)
from opsgate.spec.facts import BlueprintFacts, as_mapping, entries, step_id_of, strings
from opsgate.spec.issues import Issue, Path
from opsgate.spec.model import Expression
from opsgate.spec.source import path_part
from opsgate.spec.structure import clip, describe, did_you_mean

#: Names a template may start with; see the module docstring.
#: What ``execution`` holds (see :func:`opsgate.engine.context.execution_variables`).
EXECUTION_FIELDS = ("id", "workflow", "requested_by")
ROOTS = (
    "params",
    "data",
    "steps",
    "approvals",
    "item",
    "target",
    "targets",
    "result",
    "execution",
    "now",
)

_TEMPLATE_HINT = "templates use Jinja2 syntax, e.g. '{{ params.service }}'"


@dataclass(frozen=True)
class _Scope:
    """What a template may refer to where it is written."""

    #: The place, for messages ("step 'restart'").
    where: str
    #: Steps whose outputs are readable; ``None`` where no step has run yet.
    steps: frozenset[str] | None = None
    #: Steps whose approval decisions are readable.
    gates: frozenset[str] = frozenset()
    item: bool = False
    target: bool = False
    result: bool = False
    #: Whether secret parameters may be used (only in action arguments).
    secrets: bool = False
    #: The step the template belongs to, if any.
    owner: str | None = None
    #: Evaluated once for a step that fans out, before its runs (when, for_each, ...).
    before_fan_out: bool = False


def check_templates(facts: BlueprintFacts) -> list[Issue]:
    """Every template and condition of the blueprint, each checked in the scope it runs in."""
    issues: list[Issue] = []
    top = _Scope("the blueprint's targets and locks")
    targets = facts.data.get("targets")
    for path, text in strings(targets, ("targets",)):
        issues += _template(facts, path, text, top)
    for path, text in strings(
        as_mapping(facts.data.get("concurrency")).get("locks"), ("concurrency", "locks")
    ):
        issues += _template(facts, path, text, top)
    for path, step in facts.steps:
        issues += _step_templates(facts, path, step)
    every = frozenset(facts.ids)
    plan = _Scope("the rollback plan", every, facts.gated, secrets=True)
    for phase in ("on_failure", "finally"):
        for path, entry in entries(
            as_mapping(facts.data.get("rollback_plan")).get(phase), ("rollback_plan", phase)
        ):
            issues += _arguments_templates(facts, path, entry, plan)
    return issues


def _step_templates(facts: BlueprintFacts, path: Path, step: dict[Any, Any]) -> list[Issue]:
    step_id = step_id_of(step)
    earlier = facts.upstream.get(step_id, frozenset()) if step_id else frozenset()
    for_each = step.get("for_each")
    before = _Scope(
        f"step {step_id!r}",
        earlier,
        facts.gated & earlier,
        owner=step_id or None,
        before_fan_out=for_each is not None,
    )
    run = replace(
        before,
        before_fan_out=False,
        gates=facts.gated & (earlier | {step_id}),
        item=for_each is not None,
        target=for_each == "targets",
        secrets=True,
    )
    issues = _arguments_templates(facts, path, step, run)
    if isinstance(step.get("when"), str):
        issues += _expression(facts, (*path, "when"), step["when"], before)
    issues += _for_each(facts, path, for_each, before)
    if isinstance(step.get("max_parallel"), str):
        issues += _template(facts, (*path, "max_parallel"), step["max_parallel"], before)
    message = as_mapping(step.get("approval")).get("message")
    if isinstance(message, str):
        issues += _template(facts, (*path, "approval", "message"), message, before)
    outputs = replace(run, result=True, secrets=False, where=f"the outputs of step {step_id!r}")
    for key, value in as_mapping(step.get("outputs")).items():
        if isinstance(value, str):
            issues += _template(facts, (*path, "outputs", path_part(key)), value, outputs)
    if isinstance(step.get("rollback"), dict):
        undo = replace(run, steps=earlier | {step_id})
        issues += _arguments_templates(facts, (*path, "rollback"), step["rollback"], undo)
    return issues


def _arguments_templates(
    facts: BlueprintFacts, path: Path, site: dict[Any, Any], scope: _Scope
) -> list[Issue]:
    """Templates in an action's ``with``; its condition fields are bare expressions."""
    arguments = site.get("with")
    if not isinstance(arguments, dict):
        return []
    conditions = _condition_fields(facts, site.get("action"))
    issues: list[Issue] = []
    for key, value in arguments.items():
        where = (*path, "with", path_part(key))
        if key in conditions and isinstance(value, str):
            issues += _expression(facts, where, value, scope)
            continue
        for text_path, text in strings(value, where):
            issues += _template(facts, text_path, text, scope)
    return issues


def _condition_fields(facts: BlueprintFacts, action: Any) -> frozenset[str]:
    if facts.actions is None or not isinstance(action, str) or action not in facts.actions:
        return frozenset()
    model = facts.actions[action].arguments
    return frozenset(
        info.alias or name
        for name, info in model.model_fields.items()
        if _is_expression(info.annotation)
        or any(isinstance(meta, Expression) for meta in info.metadata)
    )


def _is_expression(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        if any(isinstance(meta, Expression) for meta in get_args(annotation)[1:]):
            return True
    return any(_is_expression(arg) for arg in get_args(annotation))


def _for_each(facts: BlueprintFacts, path: Path, value: Any, scope: _Scope) -> list[Issue]:
    where = (*path, "for_each")
    if value == "targets":
        if facts.data.get("targets") is None:
            return [
                facts.issue(
                    where,
                    "for_each: targets needs the blueprint's targets, and none are declared",
                    "declare them at the top, e.g. targets: '{{ params.hosts }}'",
                )
            ]
        return []
    if isinstance(value, str) and not is_template(value):
        return [
            facts.issue(
                where,
                f"'for_each' must be 'targets', a list or a template giving a list, "
                f"not {describe(value)}",
                f"to loop over an expression write it as a template: '{{{{ {value.strip()} }}}}'",
            )
        ]
    issues: list[Issue] = []
    for text_path, text in strings(value, where):
        issues += _template(facts, text_path, text, scope)
    return issues


def _template(facts: BlueprintFacts, path: Path, text: str, scope: _Scope) -> list[Issue]:
    if not is_template(text):
        return []
    error = check_template(text)
    if error is not None:
        message = f"template syntax error: {_one_line(error)}"
        return [facts.issue(path, message, _TEMPLATE_HINT)]
    return _references(facts, path, text, scope, expression=False)


def _expression(facts: BlueprintFacts, path: Path, text: str, scope: _Scope) -> list[Issue]:
    name = facts.document.origin(path)[-1]
    if is_template(text):
        bare = text.replace("{{", "").replace("}}", "").strip()
        return [
            facts.issue(
                path,
                f"'{name}' is a bare expression, not a template",
                f'write it without braces: {name}: "{bare}"',
            )
        ]
    error = check_expression(text)
    if error is not None:
        hint = "conditions are Jinja2 expressions, e.g. \"params.env == 'prod'\""
        return [facts.issue(path, f"expression syntax error: {_one_line(error)}", hint)]
    return _references(facts, path, text, scope, expression=True)


def _one_line(message: str) -> str:
    """A Jinja2 message as one line without its final period, like every other message."""
    return " ".join(message.split()).rstrip(".")


def _references(
    facts: BlueprintFacts, path: Path, text: str, scope: _Scope, *, expression: bool
) -> list[Issue]:
    issues = []
    for reference in sorted(references(text, expression=expression)):
        problem = _reference_problem(facts, reference, scope)
        if problem is not None:
            message, hint = problem
            issues.append(facts.issue(path, f"{message} (in {clip(text)!r})", hint))
    return issues


def _reference_problem(
    facts: BlueprintFacts, reference: Reference, scope: _Scope
) -> tuple[str, str | None] | None:
    root, name = reference[0], reference[1] if len(reference) > 1 else None
    if root == "params":
        return _parameter_problem(facts, name, scope)
    if root in ("steps", "approvals"):
        return _step_problem(facts, root, name, scope)
    if root == "data":
        return _data_problem(facts, name)
    if root == "targets" and scope.steps is None:
        return f"'targets' is not available in {scope.where}: the targets are not chosen yet", None
    if root == "execution" and name is not None and name not in EXECUTION_FIELDS:
        hint = did_you_mean(name, EXECUTION_FIELDS) or "execution has " + ", ".join(
            EXECUTION_FIELDS
        )
        return f"execution has no field {name!r}", hint
    if root in ("item", "target", "result"):
        return _binding_problem(root, scope)
    if root in ROOTS or root in ENVIRONMENT.globals or root == "loop":
        return None
    hint = did_you_mean(root, ROOTS) or "templates can use: " + ", ".join(ROOTS)
    return f"unknown name {root!r}", hint


def _parameter_problem(
    facts: BlueprintFacts, name: str | None, scope: _Scope
) -> tuple[str, str | None] | None:
    if name is None:
        return None
    if name not in facts.parameters:
        hint = did_you_mean(name, facts.parameters) or "declare it under parameters:"
        return f"parameter {name!r} is not declared", hint
    if name in facts.secrets and not scope.secrets:
        return (
            f"secret parameter {name!r} is used in {scope.where}",
            "secrets may only be passed to actions through with:, where they are resolved "
            "inside the action and never stored",
        )
    return None


def _data_problem(facts: BlueprintFacts, name: str | None) -> tuple[str, str | None] | None:
    declared = facts.data.get("data")
    names = [str(key) for key in declared] if isinstance(declared, dict) else []
    if name is None or name in names:
        return None
    return f"data document {name!r} is not declared", did_you_mean(name, names) or (
        "declare it under data: {name: path/to/file.yaml}"
    )


def _step_problem(
    facts: BlueprintFacts, root: str, name: str | None, scope: _Scope
) -> tuple[str, str | None] | None:
    if scope.steps is None:
        return f"'{root}' is not available in {scope.where}: no step has run yet", None
    if name is None:
        return None
    if name not in facts.ids:
        return f"unknown step {name!r}", did_you_mean(name, facts.ids)
    if root == "approvals" and name not in facts.gated:
        return f"step {name!r} has no approval gate", "add approval: to that step, or drop this"
    readable = scope.gates if root == "approvals" else scope.steps
    if name in readable:
        return None
    if name == scope.owner:
        return (
            f"step {name!r} cannot read its own outputs here: they exist only after it ran",
            "read them in the step's outputs through result, or in a later step",
        )
    return (
        f"{scope.where} cannot read {root}.{name}: it does not depend on {name!r}, "
        "directly or through other steps",
        f"add {name!r} to depends_on" if scope.owner else None,
    )


def _binding_problem(root: str, scope: _Scope) -> tuple[str, str | None] | None:
    bound = {"item": scope.item, "target": scope.target, "result": scope.result}[root]
    if bound:
        return None
    if scope.before_fan_out and root != "result":
        return (
            f"'{root}' is not defined here: this is evaluated once, before the step fans out",
            f"use {root} in the step's with, outputs or rollback",
        )
    where, hint = {
        "item": (
            "the with, outputs and rollback of a step with for_each",
            "add for_each to the step, or stop using item here" if scope.owner else None,
        ),
        "target": ("the with, outputs and rollback of a step with for_each: targets", None),
        "result": ("a step's outputs", "publish it in outputs, then read steps.<id>.outputs"),
    }[root]
    return f"'{root}' is not defined here: it exists only in {where}", hint

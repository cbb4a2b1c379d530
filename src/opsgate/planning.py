"""Plans: what an execution of a blueprint would do, shown before it runs. Pure.

The plan digest covers everything that decides what runs: the blueprint content, the
validated parameters, the targets, the gates and the limits. ``execute_workflow`` recomputes it
and refuses a stale one, so an agent runs exactly the plan it showed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from opsgate.engine.locks import lock_keys
from opsgate.engine.rollback import plan_actions
from opsgate.expressions import ExpressionError, render_value
from opsgate.policy import Gate, Verdict
from opsgate.spec.model import StepSpec, WorkflowSpec
from opsgate.spec.roles import RoleBook
from opsgate.views import (
    PlannedGateView,
    PlannedStepView,
    PlanView,
    VerdictView,
    ViolationView,
)

MASK = "***"


def masked(spec: WorkflowSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values with every secret one masked."""
    return {
        name: MASK if name in spec.parameters and spec.parameters[name].secret else value
        for name, value in values.items()
    }


def dag_levels(steps: Sequence[StepSpec]) -> list[list[str]]:
    """Step ids by level: a step is one level below the deepest step it depends on."""
    level: dict[str, int] = {}
    remaining = list(steps)  # blueprints are validated acyclic: each pass resolves some
    while remaining:
        progressed = []
        for step in remaining:
            if all(dep in level for dep in step.depends_on):
                level[step.id] = 1 + max((level[dep] for dep in step.depends_on), default=-1)
                progressed.append(step)
        if not progressed:  # unreachable for a validated blueprint
            raise ValueError("the blueprint's steps form a cycle")
        remaining = [step for step in remaining if step not in progressed]
    levels: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for step in steps:
        levels[level[step.id]].append(step.id)
    return levels


def mermaid(spec: WorkflowSpec, gated: set[str]) -> str:
    """The DAG as a Mermaid flowchart; gated steps are drawn as hexagons."""
    lines = ["flowchart TD"]
    for step in spec.steps:
        label = (step.name or step.id).replace('"', "'")
        shape = f'{{{{"{label}"}}}}' if step.id in gated else f'["{label}"]'
        lines.append(f"    {step.id}{shape}")
    for step in spec.steps:
        lines += [f"    {dep} --> {step.id}" for dep in step.depends_on]
    return "\n".join(lines)


def verdict_view(workflow_name: str, verdict: Verdict, roles: RoleBook) -> VerdictView:
    return VerdictView(
        workflow_name=workflow_name,
        allowed=verdict.allowed,
        effect=str(verdict.effect),
        explanation=verdict.explain(),
        matched_rules=list(verdict.matched),
        violations=[
            ViolationView(
                rule_id=v.rule_id,
                step_id=v.step_id,
                reason=v.reason,
                missing=list(v.missing),
                remedy=v.remedy,
            )
            for v in verdict.violations
        ],
        gates=[_gate_view(gate, roles) for gate in verdict.gates],
        limits=verdict.limits.model_dump(exclude_none=True),
    )


def _gate_view(gate: Gate, roles: RoleBook) -> PlannedGateView:
    approvers = gate.spec.approvers
    eligible = sorted(
        name
        for name, held in roles.principals.items()
        if name in approvers.principals or held & set(approvers.roles)
    )
    eligible += [name for name in approvers.principals if name not in eligible]
    return PlannedGateView(
        step_id=gate.step_id,
        gate=gate.name,
        rule_id=gate.rule_id,
        reason=gate.reason,
        approver_roles=list(approvers.roles),
        approver_principals=list(approvers.principals),
        eligible_principals=eligible,
        quorum=gate.spec.quorum,
        timeout_seconds=gate.spec.timeout.total_seconds(),
        on_timeout=gate.spec.on_timeout,
        allow_self_approval=gate.spec.allow_self_approval,
    )


def plan_digest(
    content: Mapping[str, Any],
    values: Mapping[str, Any],
    targets: Sequence[Mapping[str, Any]],
    verdict: Verdict,
) -> str:
    """The hash of everything that decides what an execution runs."""
    document = {
        "blueprint": content,
        "parameters": dict(values),
        "targets": [dict(target) for target in targets],
        "gates": [
            [gate.step_key, gate.name, gate.spec.model_dump(mode="json")] for gate in verdict.gates
        ],
        "limits": verdict.limits.model_dump(mode="json"),
        "allowed": verdict.allowed,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "plan-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def build_plan(
    spec: WorkflowSpec,
    values: Mapping[str, Any],
    targets: Sequence[Mapping[str, Any]],
    verdict: Verdict,
    roles: RoleBook,
    digest: str,
) -> PlanView:
    """The plan of one execution; arguments rendered where they need only parameters."""
    shown = masked(spec, values)
    variables = {"params": shown, "data": spec.data, "targets": [dict(t) for t in targets]}
    levels = dag_levels(spec.steps)
    level_of = {step_id: index for index, ids in enumerate(levels) for step_id in ids}
    steps = [
        PlannedStepView(
            step_id=step.id,
            name=step.name or step.id,
            action=step.action,
            level=level_of[step.id],
            depends_on=list(step.depends_on),
            when=step.when,
            fans_out_over=_fan_out(step),
            arguments=_rendered(step, variables),
            rollback=step.rollback.action if step.rollback else None,
        )
        for step in spec.steps
    ]
    undo = [f"undo {s.id} ({s.rollback.action})" for s in reversed(spec.steps) if s.rollback]
    undo += [f"on_failure: {a.id} ({a.action})" for a in plan_actions(spec, "on_failure")]
    undo += [f"finally: {a.id} ({a.action})" for a in plan_actions(spec, "finally")]
    gated = {gate.step_id for gate in verdict.gates if gate.step_id}
    if any(gate.step_id is None for gate in verdict.gates):
        gated |= {step.id for step in spec.steps}
    verdict_shown = verdict_view(spec.name, verdict, roles)
    return PlanView(
        workflow_name=spec.name,
        version=spec.version,
        parameters=shown,
        targets=[str(target.get("name")) for target in targets],
        levels=levels,
        steps=steps,
        verdict=verdict_shown,
        locks=lock_keys(spec, values) if spec.concurrency else [],
        rollback_plan=undo if spec.rollback_on_failure else [],
        mermaid=mermaid(spec, gated),
        plan_digest=digest,
        next_step=(
            f"review it, then call execute_workflow(workflow_name={spec.name!r}, parameters=..., "
            f"plan_digest={digest!r})"
            if verdict.allowed
            else "the policies refuse this plan: see verdict.violations for each remedy"
        ),
    )


def _fan_out(step: StepSpec) -> str | None:
    if step.for_each is None:
        return None
    return step.for_each if isinstance(step.for_each, str) else "a list"


def _rendered(step: StepSpec, variables: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        rendered = render_value(dict(step.with_), variables)
    except ExpressionError:
        return None  # reads step outputs, the item or the target: known when it runs
    return rendered if isinstance(rendered, dict) else None

"""Policy evaluation: from a request to a verdict that an agent can act on. Pure.

Every rule whose ``match`` is true for the request applies; the strongest effect decides
(deny > require_approval > limit > allow) and the default effect applies when nothing matches.
A rule that reads ``step`` is evaluated once per step with ``step`` bound to it; the others
once for the whole execution. A rule whose ``match`` cannot be evaluated (a parameter this
blueprint lacks, a type error) denies: a broken guard must not open the gate (fail closed).

The verdict names, for each violation, the rule, its reason, what is missing (a role, an
approval, a maintenance window, fewer targets) and the rule's remedy; it lists every gate
(the blueprint's own and those that policies add, per step or for the whole execution) and the
limits that apply to the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsgate.expressions import ExpressionError, evaluate, references
from opsgate.spec.model import ApprovalSpec, StepSpec, WorkflowSpec
from opsgate.spec.policies import Effect, Limits, PolicySet, Rule
from opsgate.windows import in_window

#: The approval row's step key for the gates that hold the whole execution before its first step.
EXECUTION_GATE_STEP = "@execution"
#: The gate name of a blueprint step's own ``approval:``.
BLUEPRINT_GATE = "approval"
_STRENGTH = {Effect.DENY: 3, Effect.REQUIRE_APPROVAL: 2, Effect.LIMIT: 1, Effect.ALLOW: 0}


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What is asked: run ``blueprint`` with ``params`` (secrets masked) as ``principal``."""

    blueprint: WorkflowSpec
    params: Mapping[str, Any]
    principal: str
    roles: frozenset[str]
    targets: Sequence[Mapping[str, Any]]
    now: datetime


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason the request is refused."""

    rule_id: str
    reason: str
    missing: tuple[str, ...] = ()
    remedy: str | None = None
    step_id: str | None = None

    def explain(self) -> str:
        where = f" (step {self.step_id!r})" if self.step_id else ""
        text = f"rule {self.rule_id!r}{where}: {self.reason}"
        if self.missing:
            text += f" [missing: {', '.join(self.missing)}]"
        if self.remedy:
            text += f" Remedy: {self.remedy}"
        return text


@dataclass(frozen=True, slots=True)
class Gate:
    """An approval requirement: on one step, or (``step_id`` None) on the whole execution."""

    name: str
    spec: ApprovalSpec
    step_id: str | None = None
    rule_id: str | None = None
    reason: str | None = None

    @property
    def step_key(self) -> str:
        """The step an approval of this gate is recorded under."""
        return self.step_id or EXECUTION_GATE_STEP


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of evaluating the policies for one request."""

    allowed: bool
    effect: Effect
    matched: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    gates: tuple[Gate, ...] = ()
    limits: Limits = field(default_factory=Limits)

    def gates_for(self, step_id: str) -> tuple[Gate, ...]:
        """The gates that hold ``step_id``: the execution's (until granted) and its own."""
        return tuple(gate for gate in self.gates if gate.step_id in (None, step_id))

    def denials_for(self, step_id: str) -> tuple[Violation, ...]:
        """The violations that refuse ``step_id``: the execution's and the step's own."""
        return tuple(v for v in self.violations if v.step_id in (None, step_id))

    def explain(self) -> str:
        """One paragraph for an agent: allowed or not, and why."""
        if not self.allowed:
            return "Denied by policy: " + " ".join(v.explain() for v in self.violations)
        text = "Allowed"
        if self.matched:
            text += f" (rules: {', '.join(self.matched)})"
        if self.gates:
            text += (
                f"; {len(self.gates)} approval gate(s) must be granted before the gated steps run"
            )
        return text + "."


def evaluate_policies(policies: PolicySet, request: PolicyRequest) -> Verdict:
    """Every matching rule, combined into a verdict; see the module docstring."""
    base = _variables(request)
    matched: list[Rule] = []
    violations: list[Violation] = []
    gates = list(_blueprint_gates(request.blueprint))
    for rule in policies.rules:
        steps: Sequence[StepSpec | None] = request.blueprint.steps if rule.reads_step else [None]
        for step in steps:
            variables = base if step is None else {**base, "step": _step_fields(step)}
            step_id = None if step is None else step.id
            try:
                applies = rule.match is None or bool(evaluate(rule.match, variables))
            except ExpressionError as exc:
                violations.append(_unevaluable(rule, step_id, exc))
                continue
            if not applies:
                continue
            if rule not in matched:
                matched.append(rule)
            if rule.effect is Effect.DENY:
                violations.append(_denial(rule, step_id))
            elif rule.effect is Effect.REQUIRE_APPROVAL and rule.gate is not None:
                gates.append(Gate(f"policy:{rule.id}", rule.gate, step_id, rule.id, rule.reason))
    limits = _combined_limits(rule.limits for rule in matched if rule.effect is Effect.LIMIT)
    violations += _limit_violations(matched, limits, request)
    effect = max((rule.effect for rule in matched), key=_STRENGTH.__getitem__, default=None)
    if effect is None and policies.defaults.effect is Effect.DENY:
        violations.append(
            Violation(
                "defaults",
                policies.defaults.reason or "no rule allows this request and the default is deny",
                ("an allow rule",),
                "ask a policy owner for a rule that allows this blueprint",
            )
        )
    if violations:
        effect = Effect.DENY
    return Verdict(
        allowed=not violations,
        effect=effect or policies.defaults.effect,
        matched=tuple(rule.id for rule in matched),
        violations=tuple(violations),
        gates=tuple(gates),
        limits=limits,
    )


def _variables(request: PolicyRequest) -> dict[str, Any]:
    spec = request.blueprint
    return {
        "blueprint": {
            "name": spec.name,
            "version": spec.version,
            "title": spec.title,
            "description": spec.description,
            "category": spec.category,
            "risk": str(spec.risk),
            "tags": list(spec.tags),
            "owner": spec.owner,
        },
        "params": dict(request.params),
        "principal": {"name": request.principal, "roles": sorted(request.roles)},
        "targets": [dict(target) for target in request.targets],
        "now": request.now,
        "in_window": in_window,
    }


def _step_fields(step: StepSpec) -> dict[str, Any]:
    return {
        "id": step.id,
        "name": step.name,
        "description": step.description,
        "action": step.action,
        "idempotent": step.idempotent,
    }


def _blueprint_gates(spec: WorkflowSpec) -> list[Gate]:
    return [
        Gate(BLUEPRINT_GATE, step.approval, step.id)
        for step in spec.steps
        if step.approval is not None
    ]


def _missing(rule: Rule) -> tuple[str, ...]:
    """What the request lacks, judged from what the rule's ``match`` reads."""
    chains = references(rule.match, expression=True) if rule.match else []
    read = {".".join(chain[:2]) for chain in chains} | {chain[0] for chain in chains}
    missing = []
    if "principal.roles" in read or "principal.name" in read:
        missing.append("role")
    if "in_window" in read or "now" in read:
        missing.append("maintenance window")
    if "targets" in read:
        missing.append("fewer targets")
    return tuple(missing)


def _denial(rule: Rule, step_id: str | None) -> Violation:
    reason = rule.reason or f"rule {rule.id!r} denies this request"
    return Violation(rule.id, reason, _missing(rule), rule.remedy, step_id)


def _unevaluable(rule: Rule, step_id: str | None, exc: ExpressionError) -> Violation:
    return Violation(
        rule.id,
        f"its match could not be evaluated ({exc}), so it denies (fail closed)",
        (),
        "fix the rule's match, e.g. params.get('name') for a parameter only some blueprints have",
        step_id,
    )


def _combined_limits(found: Any) -> Limits:
    """The smallest bound of each kind among the matching limit rules."""
    bounds: dict[str, int] = {}
    for limits in found:
        if limits is None:
            continue
        for name in ("max_targets", "max_parallel", "max_concurrent"):
            value = getattr(limits, name)
            if value is not None:
                bounds[name] = min(value, bounds.get(name, value))
    return Limits.model_validate(bounds)


def _limit_violations(
    matched: Sequence[Rule], limits: Limits, request: PolicyRequest
) -> list[Violation]:
    if limits.max_targets is None or len(request.targets) <= limits.max_targets:
        return []
    rule = next(
        r
        for r in matched
        if r.effect is Effect.LIMIT and r.limits and r.limits.max_targets == limits.max_targets
    )
    reason = rule.reason or f"at most {limits.max_targets} targets per execution"
    return [
        Violation(
            rule.id,
            f"{reason} (this request addresses {len(request.targets)})",
            ("fewer targets",),
            rule.remedy
            or f"split the work into executions of {limits.max_targets} targets or fewer",
        )
    ]

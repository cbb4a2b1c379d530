"""Policy verdicts: precedence, gates merged with the blueprint's, limits, windows, fail-closed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from opsgate.policy import EXECUTION_GATE_STEP, PolicyRequest, Verdict, evaluate_policies
from opsgate.spec.blueprints import parse_blueprint_or_raise
from opsgate.spec.issues import has_errors
from opsgate.spec.policies import Effect, PolicySet, parse_policy_file
from opsgate.spec.roles import RoleBook

BLUEPRINT = """
name: restart_service
version: "1.0.0"
risk: {risk}
tags: [{tags}]
parameters:
  environment: {{type: string, default: staging}}
steps:
  - id: check
    action: log
    with: {{message: checking}}
  - id: restart
    action: log
    depends_on: [check]
    approval: {{approvers: {{roles: [ops-manager]}}}}
    with: {{message: restarting}}
"""

RULES = """
rules:
  - id: prod-needs-manager
    match: "params.get('environment') == 'production' and blueprint.risk == 'high'"
    effect: require_approval
    approvers: {roles: [ops-manager]}
    reason: High-risk production changes need an ops-manager approval.
  - id: restarts-need-security
    match: "step.id == 'restart'"
    effect: require_approval
    approvers: {roles: [security]}
    quorum: 2
    reason: Restarts need two security approvals.
  - id: critical-in-window
    match: >-
      blueprint.risk == 'critical'
      and not in_window(now, 'Sat|Sun 00:00-24:00', 'Europe/Berlin')
    effect: deny
    reason: Critical operations run only at the weekend (Europe/Berlin).
    remedy: Schedule it for the weekend.
  - id: destructive-needs-operator
    match: "'destructive' in blueprint.tags and 'operator' not in principal.roles"
    effect: deny
    reason: Destructive blueprints are for operators.
  - id: small-batches
    effect: limit
    limits: {max_targets: 3, max_parallel: 4}
  - id: smaller-batches
    match: "params.get('environment') == 'production'"
    effect: limit
    limits: {max_parallel: 2}
"""

ROLES = RoleBook(
    {
        "alice": frozenset({"operator"}),
        "bob": frozenset({"ops-manager", "security"}),
        "carol": frozenset({"security"}),
    },
    frozenset({"viewer"}),
)


def policies(text: str = RULES) -> PolicySet:
    parsed, issues = parse_policy_file(text, "rules.yaml", ROLES)
    assert not has_errors(issues), issues
    return PolicySet(parsed.rules, ROLES, parsed.defaults or PolicySet().defaults)


def verdict(
    *,
    risk: str = "high",
    tags: str = "",
    params: dict[str, Any] | None = None,
    principal: str = "alice",
    targets: int = 2,
    now: datetime = datetime(2026, 3, 25, 10, 0, tzinfo=UTC),  # a Wednesday
    rules: str = RULES,
) -> Verdict:
    spec = parse_blueprint_or_raise(BLUEPRINT.format(risk=risk, tags=tags), "bp.yaml")
    request = PolicyRequest(
        blueprint=spec,
        params=params or {"environment": "staging"},
        principal=principal,
        roles=ROLES.roles_of(principal),
        targets=[{"name": f"web-{i}"} for i in range(targets)],
        now=now,
    )
    return evaluate_policies(policies(rules), request)


def test_a_policy_gate_merges_with_the_blueprint_gate_and_step_rules_gate_their_step() -> None:
    result = verdict(params={"environment": "production"})
    assert result.allowed and result.effect is Effect.REQUIRE_APPROVAL
    gates = {(gate.step_key, gate.name) for gate in result.gates}
    assert gates == {
        ("restart", "approval"),
        ("restart", "policy:restarts-need-security"),
        (EXECUTION_GATE_STEP, "policy:prod-needs-manager"),
    }
    assert {gate.name for gate in result.gates_for("check")} == {"policy:prod-needs-manager"}
    security = next(g for g in result.gates if g.rule_id == "restarts-need-security")
    assert security.spec.quorum == 2 and security.spec.approvers.roles == ("security",)


def test_without_matching_rules_only_the_blueprint_gate_remains() -> None:
    result = verdict(risk="low", rules="rules: []")
    assert result.allowed and result.effect is Effect.ALLOW and result.matched == ()
    assert [(g.step_id, g.name) for g in result.gates] == [("restart", "approval")]


def test_limits_combine_to_the_smallest_bound() -> None:
    assert verdict().limits.max_parallel == 4
    production = verdict(params={"environment": "production"})
    assert production.limits.max_parallel == 2 and production.limits.max_targets == 3


def test_too_many_targets_is_a_violation_with_a_remedy() -> None:
    result = verdict(targets=5)
    assert not result.allowed
    [violation] = result.violations
    assert violation.rule_id == "small-batches" and violation.missing == ("fewer targets",)
    assert "this request addresses 5" in violation.reason
    assert "of 3 targets or fewer" in (violation.remedy or "")


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        # Saturday 00:30 in Berlin is Friday 23:30 UTC in winter (CET, UTC+1)...
        (datetime(2026, 3, 27, 23, 30, tzinfo=UTC), True),
        (datetime(2026, 3, 27, 22, 59, tzinfo=UTC), False),
        # ...and Sunday 29 March is the change to summer time: Monday 00:00 CEST = 22:00 UTC.
        (datetime(2026, 3, 29, 21, 59, tzinfo=UTC), True),
        (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), False),
    ],
)
def test_deny_outside_a_window_follows_the_timezone_across_a_dst_change(
    now: datetime, allowed: bool
) -> None:
    result = verdict(risk="critical", now=now)
    assert result.allowed is allowed
    if not allowed:
        [violation] = result.violations
        assert violation.missing == ("maintenance window",)
        assert "rule 'critical-in-window'" in result.explain()
        assert "Remedy: Schedule it for the weekend." in result.explain()


def test_deny_names_the_missing_role() -> None:
    result = verdict(risk="low", tags="destructive", principal="bob")
    assert not result.allowed and result.effect is Effect.DENY
    [violation] = result.violations
    assert violation.missing == ("role",)
    assert result.explain().startswith("Denied by policy: rule 'destructive-needs-operator'")


def test_deny_wins_over_require_approval() -> None:
    result = verdict(
        risk="high", tags="destructive", params={"environment": "production"}, principal="carol"
    )
    assert result.effect is Effect.DENY and not result.allowed
    assert "prod-needs-manager" in result.matched


def test_a_rule_that_cannot_be_evaluated_denies() -> None:
    rules = """
rules:
  - id: needs-ticket
    match: "params.ticket == ''"
    effect: deny
    reason: A ticket is required.
"""
    result = verdict(rules=rules)
    assert not result.allowed
    assert "could not be evaluated" in result.violations[0].reason
    assert "params.get" in (result.violations[0].remedy or "")


def test_default_deny_refuses_what_no_rule_matches() -> None:
    rules = """
defaults: {effect: deny, reason: Only listed blueprints may run.}
rules:
  - id: allow-low-risk
    match: "blueprint.risk == 'low'"
    effect: allow
"""
    assert verdict(risk="low", rules=rules).allowed
    refused = verdict(risk="high", rules=rules)
    assert not refused.allowed
    assert refused.violations[0].rule_id == "defaults"
    assert refused.violations[0].reason == "Only listed blueprints may run."


def test_step_denials_name_their_step() -> None:
    rules = """
rules:
  - id: no-restart-on-fridays
    match: "step.id == 'restart' and now.weekday() == 4"
    effect: deny
    reason: No restarts on Fridays.
"""
    friday = verdict(rules=rules, now=datetime(2026, 3, 27, 10, 0, tzinfo=UTC))
    assert not friday.allowed
    assert friday.denials_for("check") == ()
    assert [v.step_id for v in friday.denials_for("restart")] == ["restart"]
    assert "(step 'restart')" in friday.explain()

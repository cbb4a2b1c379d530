"""The policies opsgate ships (``policies/``): production changes wait for an ops-manager,
critical operations run only in the maintenance window, fan-out is limited, and a blueprint
tagged destructive is for operators. Evaluated as the service evaluates them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opsgate.policy import EXECUTION_GATE_STEP, PolicyRequest, Verdict, evaluate_policies
from opsgate.spec.blueprints import parse_blueprint_or_raise
from opsgate.spec.policies import Effect, load_policies_or_raise

ROOT = Path(__file__).resolve().parents[1]
POLICIES = load_policies_or_raise(ROOT / "policies")
WEDNESDAY_NOON = datetime(2026, 3, 25, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
WEDNESDAY_NIGHT = datetime(2026, 3, 25, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
SATURDAY_NOON = datetime(2026, 3, 28, 11, 0, tzinfo=UTC)

BLUEPRINT = """
name: change
version: "1"
risk: {risk}
category: {category}
tags: [{tags}]
parameters:
  environment: {{type: string, default: staging}}
steps:
  - id: change
    action: log
    with: {{message: changing}}
"""


def verdict(
    *,
    risk: str = "medium",
    category: str = "maintenance",
    tags: str = "",
    params: dict[str, Any] | None = None,
    principal: str = "alice",
    targets: list[dict[str, Any]] | None = None,
    now: datetime = WEDNESDAY_NOON,
) -> Verdict:
    text = BLUEPRINT.format(risk=risk, category=category, tags=tags)
    request = PolicyRequest(
        blueprint=parse_blueprint_or_raise(text, "change.yaml"),
        params=params or {"environment": "staging"},
        principal=principal,
        roles=POLICIES.roles.roles_of(principal),
        targets=targets if targets is not None else [{"name": "web-1", "labels": {}}],
        now=now,
    )
    return evaluate_policies(POLICIES, request)


def execution_gates(result: Verdict) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (gate.rule_id or "", tuple(gate.spec.approvers.roles))
        for gate in result.gates
        if gate.step_key == EXECUTION_GATE_STEP
    ]


@pytest.mark.parametrize("risk", ["medium", "high", "critical"])
def test_a_production_change_waits_for_an_ops_manager(risk: str) -> None:
    result = verdict(risk=risk, params={"environment": "production"}, now=SATURDAY_NOON)
    assert result.allowed and result.effect is Effect.REQUIRE_APPROVAL
    assert execution_gates(result) == [("prod-needs-manager", ("ops-manager",))]


def test_a_target_labelled_production_counts_as_production() -> None:
    labelled = [{"name": "db-1", "labels": {"env": "production"}}, {"name": "web-1", "labels": {}}]
    assert execution_gates(verdict(targets=labelled)) == [("prod-needs-manager", ("ops-manager",))]


@pytest.mark.parametrize(
    "targets",
    [
        [{"name": "web-1", "labels": {"env": "staging"}}],
        [{"name": "web-1"}],  # no inventory: targets are bare names, and nothing fails closed
        [],
    ],
)
def test_staging_and_unlabelled_targets_need_no_approval(targets: list[dict[str, Any]]) -> None:
    result = verdict(targets=targets)
    assert result.allowed and result.gates == () and result.effect is Effect.LIMIT


def test_a_low_risk_read_of_production_needs_no_approval() -> None:
    result = verdict(risk="low", params={"environment": "production"})
    assert result.allowed and result.gates == ()


@pytest.mark.parametrize(
    ("now", "allowed"), [(WEDNESDAY_NOON, False), (WEDNESDAY_NIGHT, True), (SATURDAY_NOON, True)]
)
def test_critical_operations_run_only_in_the_maintenance_window(
    now: datetime, allowed: bool
) -> None:
    result = verdict(risk="critical", now=now)
    assert result.allowed is allowed
    if not allowed:
        [violation] = result.violations
        assert violation.rule_id == "critical-in-maintenance-window"
        assert violation.remedy and "schedule_workflow" in violation.remedy


def test_fan_out_is_limited_and_provisioning_more_so() -> None:
    assert (verdict().limits.max_targets, verdict().limits.max_parallel) == (50, 10)
    provisioning = verdict(category="provisioning").limits
    assert (provisioning.max_targets, provisioning.max_parallel) == (20, 5)
    many = [{"name": f"srv-{i}", "labels": {}} for i in range(21)]
    refused = verdict(category="provisioning", targets=many)
    assert not refused.allowed
    assert "at most 20 servers" in refused.explain()


def test_destructive_blueprints_are_for_operators() -> None:
    assert verdict(tags="destructive", principal="alice").allowed  # alice is an operator
    refused = verdict(tags="destructive", principal="carol")
    assert not refused.allowed
    assert refused.violations[0].rule_id == "destructive-needs-operator"

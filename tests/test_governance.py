"""Governance end to end through the service and a real worker, on SQLite and PostgreSQL:
separation of duties, quorum, fail-closed deadlines, escalation, superseded plans, policy gates
merged with blueprint gates, policy limits, plan digests and rollback after a rejection."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from ruamel.yaml import YAML

from opsgate.catalog import Catalog
from opsgate.errors import ApprovalRefusedError, PolicyDeniedError, StalePlanError, StoreError
from opsgate.inventory import Inventory, Target
from opsgate.service import Principal, Service
from opsgate.spec.issues import has_errors
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.policies import PolicySet, parse_policy_file
from opsgate.spec.roles import RoleBook
from opsgate.stores import SQLStore
from opsgate.views import ApprovalView
from opsgate.worker import Worker
from tests.clocks import FakeClock
from tests.engine.rehearsal import REGISTRY, load_spec

pytestmark = pytest.mark.anyio

ROLES = RoleBook(
    {
        "alice": frozenset({"operator"}),
        "bob": frozenset({"operator", "ops-manager"}),
        "carol": frozenset({"ops-manager", "security"}),
        "dave": frozenset({"ops-manager"}),
        "erin": frozenset({"security"}),
    },
    frozenset({"viewer"}),
)
ALICE, BOB, CAROL, DAVE, ERIN = (
    Principal(name, ROLES.roles_of(name)) for name in ("alice", "bob", "carol", "dave", "erin")
)
T0 = datetime(2026, 3, 25, 10, 0, tzinfo=UTC)

BLUEPRINTS = """
- name: restart
  version: "1"
  risk: high
  parameters:
    environment: {type: string, default: staging}
  targets: "group:web"
  steps:
    - id: prepare
      action: scripted
      with: {outcomes: [{succeed: {ready: true}}]}
      rollback: {action: log, with: {message: "undo prepare"}}
    - id: restart
      action: scripted
      depends_on: [prepare]
      approval:
        approvers: {roles: [ops-manager]}
        quorum: QUORUM
        timeout: 1h
        on_timeout: ON_TIMEOUT
        escalate_to: {roles: [security]}
        escalation_timeout: 30m
      with: {outcomes: [{succeed: {restarted: true}}]}
- name: ticketed
  version: "1"
  steps:
    - id: change
      action: log
      approval:
        approvers: {roles: [ops-manager]}
        response: {ticket: {type: string, required: true, pattern: "^CHG-[0-9]+$"}}
      with: {message: "change under {{ approvals.change.response.ticket }}"}
- name: fan
  version: "1"
  steps:
    - id: each
      action: scripted
      for_each: [1, 2, 3, 4, 5, 6]
      max_parallel: 5
      with: {outcomes: [{succeed: {}}]}
"""

POLICIES = """
rules:
  - id: prod-needs-security
    match: "params.get('environment') == 'production'"
    effect: require_approval
    approvers: {roles: [security]}
    reason: Production changes need a security approval.
  - id: no-friday-restarts
    match: "params.get('environment') == 'frozen'"
    effect: deny
    reason: The environment is frozen.
    remedy: Wait for the freeze to end.
  - id: no-restarts-after-six
    match: "step.id == 'restart' and now.hour >= 18"
    effect: deny
    reason: No restarts after 18:00 UTC.
  - id: two-at-a-time
    match: "blueprint.name == 'fan'"
    effect: limit
    limits: {max_parallel: 2}
    reason: Two at a time.
"""


def catalog(quorum: int = 1, on_timeout: str = "reject") -> Catalog:
    text = BLUEPRINTS.replace("QUORUM", str(quorum)).replace("ON_TIMEOUT", on_timeout)
    specs: list[WorkflowSpec] = [load_spec(doc) for doc in YAML(typ="safe").load(text)]
    parsed, issues = parse_policy_file(POLICIES, "policies.yaml", ROLES)
    assert not has_errors(issues), issues
    policies = PolicySet(parsed.rules, ROLES, PolicySet().defaults)
    return Catalog(blueprints={s.name: s for s in specs}, policies=policies)


class Rig:
    """A store, a worker and a service on one injected clock and a real inventory; the worker
    runs until idle, as often as the test says."""

    def __init__(self, database_url: str, catalog: Catalog) -> None:
        self.clock = FakeClock(T0, step=timedelta(0))
        self.catalog = catalog
        self.inventory = Inventory({})
        self.add_target("web-1")
        self.store = SQLStore.open(database_url, clock=self.clock)
        self.store.migrate()
        self.worker = self.new_worker()
        self.service = Service(self.store, catalog, inventory=self.inventory)
        self.service.clock = self.clock

    def add_target(self, name: str) -> None:
        self.inventory.targets[name] = Target(address="127.0.0.1", groups=("web",))

    def new_worker(self) -> Worker:
        """A worker as a restarted process would have it: nothing in memory."""
        return Worker(
            self.store,
            REGISTRY,
            clock=self.clock,
            targets=self.inventory.for_workflow,
            policies=self.catalog.policies,
        )

    async def settle(self) -> None:
        with anyio.fail_after(20):
            await self.worker.run(until_idle=True)

    def status(self, execution_id: str) -> str:
        return str(self.store.get_execution(execution_id).status)

    def events(self, execution_id: str) -> list[str]:
        return [str(e.type) for e in self.store.list_events(execution_id)]

    async def pending(self, principal: Principal) -> list[ApprovalView]:
        return (await self.service.list_pending_approvals(principal)).approvals


@pytest.fixture
def rigs(database_url: str) -> Iterator[Callable[..., Rig]]:
    """Rigs on the test's database, their stores closed at the end."""
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        made.append(Rig(database_url, catalog(**options)))
        return made[-1]

    yield make
    for rig in made:
        rig.store.close()


async def start(r: Rig, principal: Principal = ALICE, **params: Any) -> str:
    started = await r.service.execute_workflow(principal, "restart", params)
    await r.settle()
    return started.execution_id


async def test_separation_of_duties_and_quorum(rigs: Callable[..., Rig]) -> None:
    r = rigs(quorum=2)
    execution_id = await start(r, BOB)
    assert r.status(execution_id) == "waiting_approval"
    [approval] = await r.pending(CAROL)
    assert (approval.step_id, approval.gate, approval.quorum) == ("restart", "approval", 2)
    assert await r.pending(BOB) == []  # the requester is not offered their own gate

    with pytest.raises(ApprovalRefusedError, match="may not approve its own gate") as refused:
        await r.service.approve_step(BOB, approval.approval_id)
    assert "the blueprint's approval gate on step 'restart'" in str(refused.value)
    with pytest.raises(ApprovalRefusedError, match=r"only holders of the role\(s\) ops-manager"):
        await r.service.approve_step(ERIN, approval.approval_id)

    first = await r.service.approve_step(CAROL, approval.approval_id, comment="ok")
    again = await r.service.approve_step(CAROL, approval.approval_id, comment="ok")
    assert (first.status, again.status, again.approvals_so_far) == ("pending", "pending", 1)
    await r.settle()
    assert r.status(execution_id) == "waiting_approval"

    granted = await r.service.approve_step(DAVE, approval.approval_id)
    assert (granted.status, granted.approvals_so_far) == ("granted", 2)
    await r.settle()
    assert r.status(execution_id) == "succeeded"
    decided = [e for e in r.store.list_events(execution_id) if e.type == "approval.granted"]
    assert len(decided) == 1 and decided[0].actor == "dave"
    # Deciding a decided request is an error that names its state; the same call is idempotent.
    assert (await r.service.approve_step(DAVE, approval.approval_id)).status == "granted"
    with pytest.raises(ApprovalRefusedError, match="is granted and takes no more decisions"):
        await r.service.reject_step(CAROL, approval.approval_id, comment="too late")


async def test_a_decision_made_while_the_worker_parks_the_execution_is_not_lost(
    rigs: Callable[..., Rig],
) -> None:
    """The gate was checked (pending); the decision and its wake-up come before the worker
    has given the execution back: the release must not put it to sleep until the deadline."""
    r = rigs()
    release = r.store.release_lease
    decided: list[ApprovalView] = []

    def decide_then_release(execution_id: str, owner: str, **options: Any) -> Any:
        if options.get("awaited") and not decided:
            if threading.current_thread() is threading.main_thread():
                # On SQLite the call runs on the event loop first (call_store); another
                # process deciding holds the write lock, so the release waits in a thread.
                raise StoreError("database is locked (another process decides)")
            [approval] = r.store.list_approvals(execution_id=execution_id)
            decided.append(anyio.from_thread.run(r.service.approve_step, CAROL, approval.id))
        return release(execution_id, owner, **options)

    r.store.release_lease = decide_then_release  # type: ignore[method-assign]
    execution_id = await start(r, BOB)
    assert [view.status for view in decided] == ["granted"]
    await r.settle()
    assert r.status(execution_id) == "succeeded"


async def test_a_rejection_fails_the_step_and_rolls_back(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    execution_id = await start(r)
    [approval] = await r.pending(BOB)
    with pytest.raises(ApprovalRefusedError, match="needs a comment"):
        await r.service.reject_step(BOB, approval.approval_id, comment=" ")
    await r.service.reject_step(BOB, approval.approval_id, comment="not during the sale")
    await r.settle()
    assert r.status(execution_id) == "rolled_back"
    status = await r.service.get_workflow_status(execution_id)
    restart = next(step for step in status.steps if step.step_id == "restart")
    assert "rejected by bob: not during the sale" in str(restart.runs[0].error)
    assert "approval.rejected" in r.events(execution_id)


@pytest.mark.parametrize("past", [timedelta(0), timedelta(seconds=1)])
async def test_a_reject_deadline_fails_closed_exactly_at_the_deadline(
    rigs: Callable[..., Rig], past: timedelta
) -> None:
    r = rigs()
    execution_id = await start(r)
    r.clock.advance(timedelta(hours=1) - timedelta(seconds=1))
    r.worker = r.new_worker()  # a restart in between changes nothing
    await r.settle()
    assert r.status(execution_id) == "waiting_approval"
    r.clock.advance(timedelta(seconds=1) + past)
    await r.settle()
    assert r.status(execution_id) == "rolled_back"
    events = r.events(execution_id)
    assert "approval.expired" in events and "approval.granted" not in events


async def test_an_escalate_deadline_reopens_the_gate_to_the_escalation_role(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs(on_timeout="escalate")
    execution_id = await start(r)
    [first] = await r.pending(BOB)
    r.clock.advance(timedelta(hours=1))
    r.worker = r.new_worker()
    await r.settle()
    assert r.status(execution_id) == "waiting_approval"
    assert await r.pending(BOB) == []  # ops-manager no longer decides
    [escalated] = await r.pending(ERIN)
    assert escalated.approver_roles == ["security"] and escalated.approval_id != first.approval_id
    assert escalated.deadline_at == T0 + timedelta(hours=1, minutes=30)
    assert "approval.escalated" in r.events(execution_id)
    r.clock.advance(timedelta(minutes=30))  # the escalated gate rejects at its own deadline
    await r.settle()
    assert r.status(execution_id) == "rolled_back"


async def test_a_changed_plan_supersedes_a_pending_approval(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    execution_id = await start(r)
    [old] = await r.pending(BOB)
    r.add_target("web-2")  # a target was added to the inventory
    with pytest.raises(ApprovalRefusedError, match="superseded"):
        await r.service.approve_step(BOB, old.approval_id)
    await r.settle()
    [new] = await r.pending(BOB)
    assert new.approval_id != old.approval_id
    assert r.store.get_approval(old.approval_id).status == "superseded"
    await r.service.approve_step(BOB, new.approval_id)
    await r.settle()
    assert r.status(execution_id) == "succeeded"


async def test_a_stale_plan_digest_is_refused(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    plan = await r.service.plan_workflow(ALICE, "restart", {})
    assert plan.levels == [["prepare"], ["restart"]] and plan.targets == ["web-1"]
    assert "restart{{" in plan.mermaid  # the gated step is drawn as a hexagon
    r.add_target("web-2")
    with pytest.raises(StalePlanError, match="call plan_workflow again"):
        await r.service.execute_workflow(ALICE, "restart", {}, plan_digest=plan.plan_digest)
    fresh = await r.service.plan_workflow(ALICE, "restart", {})
    started = await r.service.execute_workflow(ALICE, "restart", {}, plan_digest=fresh.plan_digest)
    assert started.status == "pending"


async def test_a_policy_gate_merges_with_the_blueprint_gate(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    execution_id = await start(r, environment="production")
    # The policy's gate holds the whole execution before its first step.
    [policy_gate] = await r.pending(ERIN)
    assert (policy_gate.step_id, policy_gate.gate) == ("@execution", "policy:prod-needs-security")
    await r.service.approve_step(ERIN, policy_gate.approval_id)
    await r.settle()
    [blueprint_gate] = await r.pending(BOB)
    assert blueprint_gate.gate == "approval"
    await r.service.approve_step(BOB, blueprint_gate.approval_id)
    await r.settle()
    assert r.status(execution_id) == "succeeded"


async def test_a_denial_names_the_rule_and_the_remedy(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    verdict = await r.service.validate_workflow_policies(
        ALICE, "restart", {"environment": "frozen"}
    )
    assert not verdict.allowed and verdict.violations[0].rule_id == "no-friday-restarts"
    with pytest.raises(PolicyDeniedError) as denied:
        await r.service.execute_workflow(ALICE, "restart", {"environment": "frozen"})
    assert "rule 'no-friday-restarts'" in str(denied.value)
    assert "Remedy: Wait for the freeze to end." in str(denied.value)


async def test_a_limit_caps_max_parallel(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    started = await r.service.execute_workflow(ALICE, "fan", {})
    r.clock.step = timedelta(milliseconds=1)
    await r.settle()
    assert r.status(started.execution_id) == "succeeded"
    running, peak = 0, 0
    for event in r.store.list_events(started.execution_id):
        running += {"step.started": 1, "step.succeeded": -1}.get(str(event.type), 0)
        peak = max(peak, running)
    assert peak == 2


async def test_cancelling_a_waiting_execution_cancels_its_approvals(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    execution_id = await start(r)
    [approval] = await r.pending(BOB)
    await r.service.cancel_execution(ALICE, execution_id, cleanup=False)
    await r.settle()
    assert r.store.get_approval(approval.approval_id).status == "cancelled"
    with pytest.raises(ApprovalRefusedError, match="is cancelled"):
        await r.service.approve_step(BOB, approval.approval_id)


async def test_a_response_is_validated_and_read_by_the_step(rigs: Callable[..., Rig]) -> None:
    r = rigs()
    started = await r.service.execute_workflow(ALICE, "ticketed", {})
    await r.settle()
    [approval] = await r.pending(BOB)
    assert approval.response_schema == {
        "ticket": {"type": "string", "required": True, "pattern": "^CHG-[0-9]+$"}
    }
    with pytest.raises(ApprovalRefusedError, match="ticket") as refused:
        await r.service.approve_step(BOB, approval.approval_id, response={"ticket": "soon"})
    assert "is invalid" in str(refused.value)
    assert r.store.get_approval(approval.approval_id).decisions == ()  # nothing half-written
    await r.service.approve_step(BOB, approval.approval_id, response={"ticket": "CHG-42"})
    await r.settle()
    status = await r.service.get_workflow_status(started.execution_id)
    assert status.status == "succeeded"
    change = next(
        e for e in r.store.list_events(started.execution_id) if e.type == "step.succeeded"
    )
    assert change.data["outputs"]["message"] == "change under CHG-42"


async def test_policies_are_evaluated_again_right_before_a_gated_step_runs(
    rigs: Callable[..., Rig],
) -> None:
    r = rigs()
    execution_id = await start(r)  # 10:00: allowed
    [approval] = await r.pending(BOB)
    r.clock.advance(timedelta(hours=8))  # 18:00 while it waited; the gate's 1h deadline aside
    await r.service.approve_step(BOB, approval.approval_id)
    await r.settle()
    assert r.status(execution_id) == "rolled_back"
    status = await r.service.get_workflow_status(execution_id)
    restart = next(step for step in status.steps if step.step_id == "restart")
    error = restart.runs[0].error or {}
    assert error["type"] == "PolicyDenied"
    assert "rule 'no-restarts-after-six' (step 'restart')" in error["message"]

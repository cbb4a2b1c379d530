"""The worker writes few transactions: a step's outcome goes with the next step's start, the
last outcome with the execution's end and the lease, and runners that write at the same moment
share one transaction (group commit).

Events written in one transaction carry the same ``occurred_at`` (the store reads its clock
once per transaction; the real clock never repeats across transactions), so the event log
shows which transitions were committed together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import anyio
import pytest
from ruamel.yaml import YAML

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.catalog import Catalog
from opsgate.engine.statuses import ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError
from opsgate.models import (
    Change,
    Event,
    Execution,
    NewStepRun,
    NewStepRuns,
    StepRunTransition,
)
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.stores.sql import step_run_id
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY, load_spec
from tests.stores.builders import running_execution

pytestmark = pytest.mark.anyio

ALICE = Principal("alice", frozenset({"operator"}))
BLUEPRINT = """
name: four_logs
version: "1"
steps:
  - {id: one, action: log, with: {message: one}}
  - {id: two, action: log, depends_on: [one], with: {message: two}}
  - {id: three, action: log, depends_on: [two], with: {message: three}}
  - {id: four, action: log, depends_on: [three], with: {message: four}}
"""


@pytest.fixture
def store(database_url: str) -> Iterator[SQLStore]:
    """A migrated store on each database, on the real clock."""
    store = SQLStore.open(database_url)
    store.migrate()
    yield store
    store.close()


def _setup(store: SQLStore, capacity: int) -> tuple[Service, Worker]:
    spec = load_spec(YAML(typ="safe").load(BLUEPRINT), REGISTRY)
    worker = Worker(store, REGISTRY, capacity=capacity)
    return Service(store, Catalog(blueprints={spec.name: spec}), wake=worker.wake), worker


def _at(events: list[Event], event_type: str, step_id: str | None = None) -> object:
    [event] = [e for e in events if e.type == event_type and e.step_id == step_id]
    return event.occurred_at


async def test_each_outcome_is_committed_with_what_it_lets_start(store: SQLStore) -> None:
    service, worker = _setup(store, capacity=4)
    started = await service.execute_workflow(ALICE, "four_logs", {})
    with anyio.fail_after(30):
        await worker.run(until_idle=True)
    events = store.list_events(started.execution_id)
    assert store.get_execution(started.execution_id).status == "succeeded"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert _at(events, "execution.started") == _at(events, "step.started", "one")
    for done, next_one in (("one", "two"), ("two", "three"), ("three", "four")):
        assert _at(events, "step.succeeded", done) == _at(events, "step.started", next_one)
    assert _at(events, "step.succeeded", "four") == _at(events, "execution.succeeded")
    # 9 transitions in 5 transactions after the creation
    assert len({e.occurred_at for e in events if e.type != "execution.created"}) == 5
    assert store.get_execution(started.execution_id).lease_owner is None


async def test_runners_writing_at_the_same_moment_share_a_transaction(store: SQLStore) -> None:
    service, worker = _setup(store, capacity=20)
    ids = [(await service.execute_workflow(ALICE, "four_logs", {})).execution_id for _ in range(20)]
    with anyio.fail_after(60):
        await worker.run(until_idle=True)
    transactions: Counter[object] = Counter()
    for execution_id in ids:
        events = store.list_events(execution_id)
        assert store.get_execution(execution_id).status == "succeeded"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert len(events) == 11
        transactions.update(
            {e.occurred_at for e in events if e.type.startswith("step.")}  # one per batch
        )
    # alone, each execution would write its 4 steps' transitions in 5 transactions
    assert len(transactions) < 20 * 5 / 2
    assert max(transactions.values()) > 1


class CancelledMeanwhile(Action[ActionArguments]):
    """Succeeds, after an operator cancelled the execution behind the worker's back (no poke):
    the execution's end, batched with this step's outcome, is then refused."""

    name = "cancelled_meanwhile"
    arguments = ActionArguments
    changes_things = False
    description = "cancels its own execution in the store, then succeeds"

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    async def run(self, args: ActionArguments, ctx: StepContext) -> dict[str, Any]:
        cancel = partial(
            self.store.transition_execution,
            ctx.execution_id,
            Trigger.CANCEL,
            expected=ExecutionStatus.RUNNING,
            actor="bob",
        )
        await anyio.to_thread.run_sync(cancel)
        return {"done": True}


async def test_an_outcome_batched_with_a_refused_end_is_still_recorded(store: SQLStore) -> None:
    registry = REGISTRY.with_actions(CancelledMeanwhile(store))
    blueprint = """
name: raced
version: "1"
steps:
  - {id: first, action: log, with: {message: first}}
  - {id: last, action: cancelled_meanwhile, depends_on: [first]}
"""
    spec = load_spec(YAML(typ="safe").load(blueprint), registry)
    worker = Worker(store, registry)
    service = Service(store, Catalog(blueprints={spec.name: spec}), wake=worker.wake)
    started = await service.execute_workflow(ALICE, "raced", {})
    with anyio.fail_after(30):
        await worker.run(until_idle=True)
    execution, runs = store.execution_status(started.execution_id)
    assert (execution.status, execution.lease_owner) == ("cancelled", None)
    assert {run.step_id: run.status for run in runs} == {"first": "succeeded", "last": "succeeded"}
    events = store.list_events(started.execution_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert "execution.succeeded" not in [e.type for e in events]


async def test_a_refused_change_in_a_group_fails_its_runner_only(
    store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(store, REGISTRY, owner="w1")
    for _ in range(3):
        running_execution(store)
    first, refused, third = store.claim_executions("w1", lease_seconds=30, limit=3)

    def start(execution: Execution, step_id: str) -> list[Change]:
        return [
            NewStepRuns(
                execution_id=execution.id, runs=(NewStepRun(step_id=step_id),), lease_owner="w1"
            ),
            StepRunTransition(
                step_run_id=step_run_id(execution.id, step_id, ""),
                trigger=Trigger.START,
                expected=StepRunStatus.PENDING,
                actor="w1",
                lease_owner="w1",
            ),
        ]

    store.write(start(refused, "check"))  # so that starting it again is refused
    outcomes: dict[str, object] = {}
    batches: list[int] = []
    write_batch = store.write

    def counted(changes: list[Change]) -> list[Any]:
        batches.append(len(changes))
        return write_batch(changes)

    monkeypatch.setattr(store, "write", counted)

    async def write(name: str, changes: list[Change]) -> None:
        try:
            outcomes[name] = await worker.write(changes)
        except ConflictError as exc:
            outcomes[name] = exc

    # The first leads; the other two queue before it writes, and the three form one group.
    async with anyio.create_task_group() as group:
        group.start_soon(write, "first", start(first, "check"))
        group.start_soon(write, "refused", start(refused, "check")[1:])
        group.start_soon(write, "third", start(third, "check"))
    assert batches == [2 + 1 + 2, 2, 1, 2]  # the group, refused; then each on its own
    assert isinstance(outcomes["refused"], ConflictError)
    for name, execution in (("first", first), ("third", third)):
        records = outcomes[name]
        assert isinstance(records, list)
        assert {r.execution_id for r in records} == {execution.id}  # the group was rewritten
        assert [r.status for r in store.list_step_runs(execution.id)] == ["running"]

"""Crash recovery with real processes: a worker is killed (``SIGKILL``) mid-step or mid-rollback,
and a second worker process takes the execution over once the first one's lease expires.

Each test drives worker processes (:mod:`tests.engine.worker_process`) on a SQLite file and on
PostgreSQL, and watches from outside: the database (statuses, events) and the scripted action's
marker files (one line per attempt start, left behind even by a killed process). A ``block_file``
holds a step (or a compensation) running until the test creates it, so the kill always lands
mid-attempt. The test process never runs a worker itself.

Beside kills: a worker frozen past its lease (``SIGSTOP``) and thawed after the takeover, a
database outage longer than SQLite's busy timeout, and deaths between two commits of a worker
(written through the store, see the last section).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from opsgate.actions.scripted import read_markers
from opsgate.catalog import Catalog
from opsgate.engine.statuses import EXECUTION_TERMINAL, ExecutionStatus, StepRunStatus, Trigger
from opsgate.models import Event, Execution, NewStepRun
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.stores.database import SQLITE_BUSY_TIMEOUT_MS
from opsgate.stores.sql import utc_now
from opsgate.worker import Worker
from tests.clocks import FakeClock
from tests.engine.rehearsal import REGISTRY, load_spec
from tests.engine.worker_process import (
    DEADLINE_SECONDS,
    POLL_SECONDS,
    WorkerProcesses,
    new_execution,
    worker_processes,
)

#: Short, so that the second worker reclaims quickly once the first one is dead.
LEASE_SECONDS = 1.0
OPERATOR = Principal("alice", frozenset({"operator"}))


@pytest.fixture
def store(database_url: str) -> Iterator[SQLStore]:
    """A migrated store on each database, on the real clock (the workers' clock)."""
    store = SQLStore.open(database_url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    with worker_processes(database_url, tmp_path) as workers:
        yield workers


def ended(store: SQLStore, execution_id: str) -> bool:
    """At a terminal status with its lease given back: nothing more will happen on its own."""
    execution = store.get_execution(execution_id)
    return execution.status in EXECUTION_TERMINAL and execution.lease_owner is None


def lease_expired(store: SQLStore, execution_id: str) -> bool:
    return lease_expired_at(store, execution_id, utc_now())


def lease_expired_at(store: SQLStore, execution_id: str, now: datetime) -> bool:
    expires = store.get_execution(execution_id).lease_expires_at
    return expires is not None and expires <= now


def step_markers(path: Path, execution_id: str) -> list[tuple[str, int]]:
    """(step, attempt) of each attempt start recorded in ``path``, in order."""
    return [(m.step_id, m.attempt) for m in read_markers(path) if m.execution_id == execution_id]


def all_events(store: SQLStore, execution: Execution) -> list[Event]:
    events = store.list_events(execution.id, limit=500)
    assert len(events) < 500
    return events


def assert_gapless(events: list[Event], execution: Execution) -> None:
    """Seqs 1..N, no gap and no duplicate, and the execution's ``last_seq`` is N."""
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert execution.last_seq == len(events)


def assert_nothing_from(events: list[Event], dead: str, after: str) -> None:
    """Once ``after`` wrote its first event, the dead worker ``dead`` wrote none."""
    first = next(i for i, event in enumerate(events) if event.actor == after)
    assert [e for e in events[first:] if e.actor == dead] == []


def step_events(events: list[Event], step_id: str) -> list[tuple[str, str]]:
    """(type, actor) of the step's transitions, progress reports left out."""
    return [
        (str(e.type), e.actor)
        for e in events
        if e.step_id == step_id and e.type != "step.progressed"
    ]


def run_statuses(store: SQLStore, execution_id: str) -> dict[str, str]:
    return {run.step_id: str(run.status) for run in store.list_step_runs(execution_id)}


def blueprint(name: str, steps: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"name": name, "version": "1", "steps": steps, **more}


def test_an_idempotent_step_runs_again_after_its_worker_was_killed(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    markers, block = tmp_path / "markers", tmp_path / "release"
    spec = load_spec(
        blueprint(
            "crash_idempotent",
            [
                {"id": "a", "action": "scripted", "with": {"marker_file": str(markers)}},
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "idempotent": True,
                    "with": {"marker_file": str(markers), "block_file": str(block)},
                },
                {
                    "id": "c",
                    "action": "scripted",
                    "depends_on": ["b"],
                    "with": {"marker_file": str(markers)},
                },
            ],
        )
    )
    execution = new_execution(store, spec)

    first = workers.start("w1", lease=LEASE_SECONDS)
    workers.until(lambda: ("b", 1) in step_markers(markers, execution.id), "b to start")
    first.kill()
    block.touch()
    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, execution.id), "the execution to end")

    final = store.get_execution(execution.id)
    assert final.status == "succeeded"
    assert step_markers(markers, execution.id) == [("a", 1), ("b", 1), ("b", 2), ("c", 1)]
    assert run_statuses(store, execution.id) == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
    }

    events = all_events(store, execution)
    assert_gapless(events, final)
    assert_nothing_from(events, "w1", after="w2")
    assert step_events(events, "a") == [("step.started", "w1"), ("step.succeeded", "w1")]
    assert step_events(events, "b") == [
        ("step.started", "w1"),
        ("step.retrying", "w2"),
        ("step.started", "w2"),
        ("step.succeeded", "w2"),
    ]
    assert step_events(events, "c") == [("step.started", "w2"), ("step.succeeded", "w2")]
    [retrying] = [e for e in events if e.type == "step.retrying"]
    assert "worker was lost" in str(retrying.data["reason"])
    assert retrying.attempt == 1
    assert [e.attempt for e in events if e.step_id == "b" and e.type == "step.started"] == [1, 2]


def test_a_non_idempotent_running_step_ends_interrupted_and_the_execution_rolls_back(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    markers, undone, block = tmp_path / "markers", tmp_path / "undone", tmp_path / "release"
    spec = load_spec(
        blueprint(
            "crash_interrupted",
            [
                {
                    "id": "a",
                    "action": "scripted",
                    "with": {"marker_file": str(markers)},
                    "rollback": {"action": "scripted", "with": {"marker_file": str(undone)}},
                },
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "with": {"marker_file": str(markers), "block_file": str(block)},
                },
                {
                    "id": "c",
                    "action": "scripted",
                    "depends_on": ["b"],
                    "with": {"marker_file": str(markers)},
                },
            ],
        )
    )
    execution = new_execution(store, spec)

    first = workers.start("w1", lease=LEASE_SECONDS)
    workers.until(lambda: ("b", 1) in step_markers(markers, execution.id), "b to start")
    first.kill()
    # Were b run again by mistake, it would finish (and show in the markers), not hang.
    block.touch()
    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, execution.id), "the execution to end")

    final = store.get_execution(execution.id)
    assert final.status == "rolled_back"
    assert step_markers(markers, execution.id) == [("a", 1), ("b", 1)]
    assert step_markers(undone, execution.id) == [("a", 1)]
    statuses = run_statuses(store, execution.id)
    assert statuses["a"] == "rolled_back"
    assert statuses["b"] == "interrupted"
    assert statuses.get("c") in (None, "pending", "skipped", "cancelled")

    events = all_events(store, execution)
    assert_gapless(events, final)
    assert_nothing_from(events, "w1", after="w2")
    assert step_events(events, "b") == [("step.started", "w1"), ("step.interrupted", "w2")]
    [interrupted] = [e for e in events if e.type == "step.interrupted"]
    assert interrupted.data["error"]["type"] == "Interrupted"
    assert [e for e in events if e.step_id == "c" and e.type == "step.started"] == []
    assert step_events(events, "a")[-1] == ("step.rolled_back", "w2")
    tail = [str(e.type) for e in events if e.step_id is None][-3:]
    assert tail == ["execution.failed", "execution.rolling_back", "execution.rolled_back"]


def test_a_rollback_killed_mid_compensation_resumes_at_that_compensation(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    markers, undone, block = tmp_path / "markers", tmp_path / "undone", tmp_path / "release"
    noted = tmp_path / "noted"

    def undo(**more: str) -> dict[str, Any]:
        return {"action": "scripted", "with": {"marker_file": str(undone), **more}}

    forward = {"marker_file": str(markers)}
    spec = load_spec(
        blueprint(
            "crash_rollback",
            [
                {"id": "a", "action": "scripted", "with": forward, "rollback": undo()},
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "with": forward,
                    "rollback": undo(block_file=str(block)),
                },
                {
                    "id": "c",
                    "action": "scripted",
                    "depends_on": ["b"],
                    "with": forward,
                    "rollback": undo(),
                },
                {
                    "id": "d",
                    "action": "scripted",
                    "depends_on": ["c"],
                    "with": {**forward, "outcomes": [{"fail": "broken"}]},
                },
            ],
            rollback_plan={
                "on_failure": [
                    {"id": "note", "action": "scripted", "with": {"marker_file": str(noted)}}
                ]
            },
        )
    )
    execution = new_execution(store, spec)

    first = workers.start("w1", lease=LEASE_SECONDS)
    workers.until(
        lambda: [s for s, _ in step_markers(undone, execution.id)] == ["c", "b"],
        "b's compensation to start",
    )
    first.kill()
    block.touch()
    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, execution.id), "the execution to end")

    final = store.get_execution(execution.id)
    assert final.status == "rolled_back"
    # c's compensation had completed before the kill: not run again; b's is re-run, then a's.
    assert [s for s, _ in step_markers(undone, execution.id)] == ["c", "b", "b", "a"]
    assert [s for s, _ in step_markers(markers, execution.id)] == ["a", "b", "c", "d"]
    assert len(step_markers(noted, execution.id)) == 1
    assert run_statuses(store, execution.id) == {
        "a": "rolled_back",
        "b": "rolled_back",
        "c": "rolled_back",
        "d": "failed",
        "@on_failure.note": "succeeded",
    }

    events = all_events(store, execution)
    assert_gapless(events, final)
    assert_nothing_from(events, "w1", after="w2")
    rolled_back = [(e.step_id, e.actor) for e in events if e.type == "step.rolled_back"]
    assert rolled_back == [("c", "w1"), ("b", "w2"), ("a", "w2")]
    types = Counter(str(e.type) for e in events if e.step_id is None)
    assert types["execution.rolling_back"] == 1
    assert types["execution.rolled_back"] == 1


@pytest.mark.parametrize("phase", ["on_failure", "finally"])
def test_a_rollback_plan_action_killed_mid_way_runs_again(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path, phase: str
) -> None:
    markers, block = tmp_path / "markers", tmp_path / "release"
    fails = phase == "on_failure"
    spec = load_spec(
        blueprint(
            "crash_plan",
            [
                {
                    "id": "a",
                    "action": "scripted",
                    "with": {"marker_file": str(markers)},
                    "rollback": {"action": "scripted"},
                },
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "with": {
                        "marker_file": str(markers),
                        "outcomes": [{"fail": "broken"}] if fails else [],
                    },
                },
            ],
            rollback_plan={
                phase: [
                    {
                        "id": "note",
                        "action": "scripted",
                        "with": {"marker_file": str(markers), "block_file": str(block)},
                    }
                ]
            },
        )
    )
    execution = new_execution(store, spec)
    note = f"@{phase}.note"

    first = workers.start("w1", lease=LEASE_SECONDS)
    workers.until(lambda: (note, 1) in step_markers(markers, execution.id), f"{note} to start")
    first.kill()
    block.touch()
    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, execution.id), "the execution to end")

    final = store.get_execution(execution.id)
    assert final.status == ("rolled_back" if fails else "succeeded")
    assert step_markers(markers, execution.id) == [("a", 1), ("b", 1), (note, 1), (note, 2)]
    assert run_statuses(store, execution.id)[note] == "succeeded"
    events = all_events(store, execution)
    assert_gapless(events, final)
    assert_nothing_from(events, "w1", after="w2")
    assert step_events(events, note) == [
        ("step.started", "w1"),
        ("step.retrying", "w2"),
        ("step.started", "w2"),
        ("step.succeeded", "w2"),
    ]


#: How long b's first attempt sleeps before it reports and blocks, in the ``sleeping`` case.
SLEEP_SECONDS = 1.5


@pytest.mark.parametrize("frozen", ["blocked", "sleeping"])
def test_a_stalled_worker_that_lost_its_lease_writes_nothing_when_it_wakes_up(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path, frozen: str
) -> None:
    """Not killed but frozen (``SIGSTOP``: a long GC pause, a suspended VM) past its lease: a
    second worker takes over; once thawed, the first one finds its lease gone and stops.

    ``blocked``: frozen while b's attempt waits for its block file (its report written);
    ``sleeping``: frozen while the attempt sleeps, before it reports; it reports on waking up.
    """
    markers, block = tmp_path / "markers", tmp_path / "release"
    first_attempt = [{"sleep": SLEEP_SECONDS}] if frozen == "sleeping" else []
    spec = load_spec(
        blueprint(
            "stalled",
            [
                {"id": "a", "action": "scripted", "with": {"marker_file": str(markers)}},
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "idempotent": True,
                    "with": {
                        "marker_file": str(markers),
                        "block_file": str(block),
                        "outcomes": first_attempt,
                    },
                },
                {
                    "id": "c",
                    "action": "scripted",
                    "depends_on": ["b"],
                    "with": {"marker_file": str(markers)},
                },
            ],
        )
    )
    execution = new_execution(store, spec)

    def reported() -> bool:
        return any(e.type == "step.progressed" for e in all_events(store, execution))

    first = workers.start("w1", lease=LEASE_SECONDS)
    workers.until(lambda: ("b", 1) in step_markers(markers, execution.id), "b to start")
    seen = time.monotonic()
    if frozen == "blocked":
        workers.until(reported, "b to report that it waits")
    first.freeze(store, execution.id)
    assert reported() is (frozen == "blocked"), "w1 was frozen too late"
    workers.until(lambda: lease_expired(store, execution.id), "w1's lease to expire")
    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ("b", 2) in step_markers(markers, execution.id), "w2 to re-run b")
    block.touch()
    workers.until(lambda: ended(store, execution.id), "the execution to end")
    # Sleeping, w1 wakes up past the end of its sleep (usually long past already).
    workers.until(lambda: time.monotonic() > seen + SLEEP_SECONDS, "w1's sleep to be over")
    first.thaw()
    # w1's runner stops when it sees the lease gone: from its renewal or its attempt's write.
    workers.until(
        lambda: (
            f"of execution {execution.id}" in first.logs()
            or f"lease of {execution.id}" in first.logs()
        ),
        "w1 to notice it lost the lease",
    )

    final = store.get_execution(execution.id)
    assert final.status == "succeeded"
    assert final.lease_owner is None
    assert step_markers(markers, execution.id) == [("a", 1), ("b", 1), ("b", 2), ("c", 1)]
    assert run_statuses(store, execution.id) == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
    }
    events = all_events(store, execution)
    assert_gapless(events, final)
    assert_nothing_from(events, "w1", after="w2")


OUTAGE_LEASE_SECONDS = 20.0


def test_a_worker_outlives_a_database_outage_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    """SQLite only: another process holds the write lock past ``SQLITE_BUSY_TIMEOUT_MS`` while a
    step finishes (a backup, a stuck writer, a starved machine; on PostgreSQL, a restart)."""
    path = tmp_path / "opsgate.db"
    url = f"sqlite:///{path}"
    markers, block = tmp_path / "markers", tmp_path / "release"
    spec = load_spec(
        blueprint(
            "outage",
            [
                {
                    "id": "a",
                    "action": "scripted",
                    "with": {"marker_file": str(markers), "block_file": str(block)},
                },
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "with": {"marker_file": str(markers)},
                },
            ],
        )
    )
    store = SQLStore.open(url)
    try:
        store.migrate()
        execution = new_execution(store, spec)
        with worker_processes(url, tmp_path) as workers:
            # A lease that outlasts the outage: a lapsed lease is another test's business.
            workers.start("w1", lease=OUTAGE_LEASE_SECONDS)
            workers.until(
                lambda: any(e.type == "step.progressed" for e in all_events(store, execution)),
                "a to report that it waits",
            )
            outage = sqlite3.connect(path, timeout=DEADLINE_SECONDS, isolation_level=None)
            try:
                outage.execute("BEGIN IMMEDIATE")
                block.touch()  # a finishes during the outage
                over = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000 + 1
                workers.until(lambda: time.monotonic() > over, "the outage to last")
            finally:
                outage.close()
            workers.until(lambda: ended(store, execution.id), "the execution to end")
        final = store.get_execution(execution.id)
        assert final.status == "succeeded"
        assert step_markers(markers, execution.id) == [("a", 1), ("b", 1)]
        assert_gapless(all_events(store, execution), final)
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_worker_whose_own_lease_lapsed_does_not_take_its_execution_over_again(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """In process, on a fake clock: the lease lapses (by the store's clock) while the worker runs
    the execution; the worker looks for work before its next renewal."""
    markers, block = tmp_path / "markers", tmp_path / "release"
    spec = load_spec(
        blueprint(
            "lapsed",
            [
                {
                    "id": "a",
                    "action": "scripted",
                    "with": {"marker_file": str(markers), "block_file": str(block)},
                },
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "with": {"marker_file": str(markers)},
                },
            ],
        )
    )
    store = SQLStore.open(database_url, clock=clock)
    store.migrate()
    execution = new_execution(store, spec)
    worker = Worker(store, REGISTRY, owner="w1", lease_seconds=30, clock=clock)

    async def until(predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(10):
            while not predicate():  # noqa: ASYNC110
                await anyio.sleep(POLL_SECONDS)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await until(lambda: ("a", 1) in step_markers(markers, execution.id))
            clock.advance(timedelta(seconds=31))
            worker.wake()
            await until(lambda: not lease_expired_at(store, execution.id, clock.now))
            block.touch()
            await until(lambda: ended(store, execution.id))
            group.cancel_scope.cancel()
        assert run_statuses(store, execution.id) == {"a": "succeeded", "b": "succeeded"}
        assert store.get_execution(execution.id).status == "succeeded"
        assert step_markers(markers, execution.id) == [("a", 1), ("b", 1)]
    finally:
        store.close()


# ------------------------------------------------------------------ between two commits
# A worker can die between two of its commits with no action running in between (the ending of
# an execution, then its rollback or its clean-up). No kill lands there deterministically, so
# these tests write through the store exactly what the worker has committed at that point, as
# worker "w1", which then "dies" holding its lease; a real worker process takes over.


@dataclass
class DeadWorker:
    """Writes as worker ``owner`` would, lease-guarded, then never writes again."""

    store: SQLStore
    owner: str = "w1"

    def claim(self, *wanted: Execution) -> None:
        claimed = self.store.claim_executions(self.owner, lease_seconds=LEASE_SECONDS, limit=10)
        assert {c.id for c in claimed} == {e.id for e in wanted}

    def transition(
        self, execution: Execution, trigger: Trigger, expected: str, **more: Any
    ) -> None:
        self.store.transition_execution(
            execution.id,
            trigger,
            expected=ExecutionStatus(expected),
            actor=self.owner,
            lease_owner=self.owner,
            **more,
        )

    def run_step(self, execution: Execution, step_id: str, *, fail: bool = False) -> None:
        [run] = self.store.create_step_runs(execution.id, [NewStepRun(step_id=step_id)])
        run, _ = self.store.transition_step_run(
            run.id,
            Trigger.START,
            expected=StepRunStatus.PENDING,
            actor=self.owner,
            lease_owner=self.owner,
        )
        if not fail:
            self.store.transition_step_run(
                run.id,
                Trigger.SUCCEED,
                expected=StepRunStatus.RUNNING,
                actor=self.owner,
                lease_owner=self.owner,
            )
            return
        error = {"type": "Broken", "message": "broken", "retryable": False}
        self.store.transition_step_run(
            run.id,
            Trigger.FAIL,
            expected=StepRunStatus.RUNNING,
            actor=self.owner,
            lease_owner=self.owner,
            error=error,
            data={"error": error},
        )


def test_a_cancel_with_cleanup_while_the_worker_is_dead_still_rolls_back(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """The operator cancels after the worker died mid-step, before anyone took over: the
    execution is ``cancelled`` with the dead worker's lease, and must still be cleaned up."""
    markers, undone, block = tmp_path / "markers", tmp_path / "undone", tmp_path / "release"
    spec = load_spec(
        blueprint(
            "crash_cancelled",
            [
                {
                    "id": "a",
                    "action": "scripted",
                    "with": {"marker_file": str(markers)},
                    "rollback": {"action": "scripted", "with": {"marker_file": str(undone)}},
                },
                {
                    "id": "b",
                    "action": "scripted",
                    "depends_on": ["a"],
                    "with": {"marker_file": str(markers), "block_file": str(block)},
                },
            ],
        )
    )
    service = Service(store, Catalog(blueprints={spec.name: spec}))
    execution = new_execution(store, spec)

    first = workers.start("w1", lease=LEASE_SECONDS)
    workers.until(lambda: ("b", 1) in step_markers(markers, execution.id), "b to start")
    first.kill()
    block.touch()
    anyio.run(partial(service.cancel_execution, OPERATOR, execution.id, cleanup=True))
    assert store.get_execution(execution.id).lease_owner == "w1"
    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, execution.id), "the execution to end")

    final = store.get_execution(execution.id)
    assert final.status == "rolled_back"
    assert step_markers(markers, execution.id) == [("a", 1), ("b", 1)]
    assert step_markers(undone, execution.id) == [("a", 1)]
    assert run_statuses(store, execution.id) == {"a": "rolled_back", "b": "cancelled"}
    events = all_events(store, execution)
    assert_gapless(events, final)
    assert_nothing_from(events, "w1", after="w2")


def test_a_worker_dead_between_failing_and_rolling_back_leaves_the_rollback_to_another(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    undone = tmp_path / "undone"
    spec = load_spec(
        blueprint(
            "crash_failing",
            [
                {
                    "id": "a",
                    "action": "scripted",
                    "rollback": {"action": "scripted", "with": {"marker_file": str(undone)}},
                },
                {"id": "b", "action": "scripted", "depends_on": ["a"]},
            ],
        )
    )
    execution = new_execution(store, spec)
    dead = DeadWorker(store)
    dead.claim(execution)
    dead.transition(execution, Trigger.START, "pending")
    dead.run_step(execution, "a")
    dead.run_step(execution, "b", fail=True)
    failure = {"type": "StepFailed", "message": "step b failed", "step_id": "b"}
    dead.transition(execution, Trigger.FAIL, "running", error=failure, data={"error": failure})

    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, execution.id), "the execution to end")

    final = store.get_execution(execution.id)
    assert final.status == "rolled_back"
    assert step_markers(undone, execution.id) == [("a", 1)]
    assert run_statuses(store, execution.id) == {"a": "rolled_back", "b": "failed"}
    events = all_events(store, execution)
    assert_gapless(events, final)
    assert [(str(e.type), e.actor) for e in events][-3:] == [
        ("execution.rolling_back", "w2"),
        ("step.rolled_back", "w2"),
        ("execution.rolled_back", "w2"),
    ]


def test_a_worker_dead_before_releasing_its_lock_does_not_hold_the_queue_forever(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    spec = load_spec(
        blueprint(
            "crash_locked",
            [{"id": "only", "action": "scripted", "with": {"marker_file": str(markers)}}],
            concurrency={"locks": ["the-service"]},
        )
    )
    holder, queued = new_execution(store, spec), new_execution(store, spec)
    dead = DeadWorker(store)
    dead.claim(holder, queued)
    assert store.acquire_lock("the-service", holder.id, actor="w1").status == "held"
    assert store.acquire_lock("the-service", queued.id, actor="w1").status == "queued"
    store.release_lease(queued.id, "w1")
    dead.transition(holder, Trigger.START, "pending")
    dead.run_step(holder, "only")
    dead.transition(holder, Trigger.SUCCEED, "running")

    workers.start("w2", lease=LEASE_SECONDS)
    workers.until(lambda: ended(store, queued.id), "the queued execution to end")

    assert store.get_execution(queued.id).status == "succeeded"
    assert store.get_execution(holder.id).status == "succeeded"
    assert store.get_execution(holder.id).lease_owner is None
    assert [m.execution_id for m in read_markers(markers)] == [queued.id]
    released = [e for e in all_events(store, holder) if e.type == "lock.released"]
    assert [e.actor for e in released] == ["w2"]

"""Two worker processes on one database share the work and never run anything twice.

On PostgreSQL (the multi-replica store) claims race through ``FOR UPDATE SKIP LOCKED``; on a
SQLite file (documented as single node) through one writer at a time with WAL: correctness,
nothing twice, must hold on both. Everything is checked from outside the workers: the scripted
action's marker file (one line per attempt start) and the event log.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from opsgate.actions.scripted import read_markers
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.stores import SQLStore
from opsgate.stores.database import READ_ONLY
from opsgate.stores.tables import events, executions
from tests.engine.rehearsal import load_spec
from tests.engine.worker_process import WorkerProcesses, new_execution, worker_processes

EXECUTIONS = 100
STEPS = ("first", "second", "third")
#: Small, so that each worker claims many times and the claims race.
CAPACITY = 8
#: Long enough that no lease expires under load: a reclaim is not what this test is about.
LEASE_SECONDS = 10.0


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


@contextmanager
def read_only(store: SQLStore) -> Iterator[sa.Connection]:
    """A read transaction that leaves SQLite's write lock to the workers (``BEGIN DEFERRED``)."""
    with store.engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        with conn.begin():
            yield conn


def ended_count(store: SQLStore) -> int:
    """Executions at a terminal status whose lease was given back."""
    query = sa.select(sa.func.count()).where(
        executions.c.status.in_(EXECUTION_TERMINAL), executions.c.lease_owner.is_(None)
    )
    with read_only(store) as conn:
        return int(conn.execute(query).scalar_one())


def explain_failures(store: SQLStore, workers: WorkerProcesses) -> str:
    """The executions that did not succeed, their errors and events, and the workers' logs."""
    lines = []
    with read_only(store) as conn:
        failed = conn.execute(
            sa.select(executions.c.id, executions.c.status, executions.c.error).where(
                executions.c.status != "succeeded"
            )
        ).all()
    for row in failed:
        lines.append(f"{row.id} {row.status}: {row.error}")
        lines.extend(
            f"  {e.seq} {e.type} {e.actor} {e.step_id} {e.data}"
            for e in store.list_events(row.id, limit=500)
        )
    return "\n".join(lines) + "\n" + workers.all_logs()


def test_two_workers_share_a_hundred_executions_and_run_each_step_once(
    store: SQLStore, workers: WorkerProcesses, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    spec = load_spec(
        {
            "name": "shared",
            "version": "1",
            "steps": [
                {
                    "id": step,
                    "action": "scripted",
                    "depends_on": [STEPS[i - 1]] if i else [],
                    "with": {"marker_file": str(markers)},
                }
                for i, step in enumerate(STEPS)
            ],
        }
    )
    ids = {new_execution(store, spec).id for _ in range(EXECUTIONS)}

    workers.start("w1", lease=LEASE_SECONDS, capacity=CAPACITY)
    workers.start("w2", lease=LEASE_SECONDS, capacity=CAPACITY)
    workers.until(lambda: ended_count(store) == EXECUTIONS, "every execution to end")
    workers.kill_all()

    with read_only(store) as conn:
        statuses = Counter(conn.execute(sa.select(executions.c.status)).scalars())
        last_seqs = {
            row.id: row.last_seq
            for row in conn.execute(sa.select(executions.c.id, executions.c.last_seq))
        }
        rows = conn.execute(
            sa.select(events.c.execution_id, events.c.seq, events.c.type, events.c.actor)
            .where(events.c.execution_id.is_not(None))
            .order_by(events.c.execution_id, events.c.seq)
        ).all()
        starts = Counter(
            (row.execution_id, row.step_id)
            for row in conn.execute(
                sa.select(events.c.execution_id, events.c.step_id).where(
                    events.c.type == "step.started"
                )
            )
        )
    assert statuses == {"succeeded": EXECUTIONS}, explain_failures(store, workers)

    every_step = {(execution_id, step) for execution_id in ids for step in STEPS}
    attempts = Counter((m.execution_id, m.step_id) for m in read_markers(markers))
    assert set(attempts) == every_step
    assert [pair for pair, count in attempts.items() if count != 1] == []
    assert set(starts) == every_step
    assert [pair for pair, count in starts.items() if count != 1] == []

    seqs: defaultdict[str, list[int]] = defaultdict(list)
    actors: defaultdict[str, set[str]] = defaultdict(set)
    for execution_id, seq, event_type, actor in rows:
        seqs[execution_id].append(seq)
        if event_type != "execution.created":
            actors[execution_id].add(actor)
    assert set(seqs) == ids
    gapped = [e for e in ids if seqs[e] != list(range(1, last_seqs[e] + 1))]
    assert gapped == []
    # One worker drove each execution from start to end, and both workers had a share.
    assert {e: owners for e, owners in actors.items() if len(owners) != 1} == {}
    share = Counter(next(iter(owners)) for owners in actors.values())
    assert set(share) == {"w1", "w2"}, share

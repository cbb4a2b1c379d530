"""What the store costs to persist one step transition, against the raw SQLite commit.

    .venv/bin/python bench/transitions.py                   # 2000 transitions, 5 rounds
    .venv/bin/python bench/transitions.py --transitions 500 --rounds 3

The issue's target: each persisted step transition within 2x the raw SQLite commit (WAL,
``synchronous=FULL``, one UPDATE + one INSERT + COMMIT, as ``../shared/bench-peers/limits.py``
measures it). ``bench/engine.py`` divides a whole engine's wall time by its transitions (the
conductor, the event loop, thread hops and the creation of executions included); this script
measures the persisting itself: a claimed execution's step runs moved pending -> running ->
succeeded, each transition written alone through ``SQLStore.write`` (its own transaction, lease
guard, compare-and-set, gapless event number and event row, as a worker writes a step that ends
while nothing else is queued), under ``not_waiting()`` as the worker's calls on its event loop
run (on the loop's kept connection), timed in the calling thread. Each round alternates the raw loop
and the store on fresh files in the same directory, so both see the same disk; both figures are
means over the round (as the harness's rates are).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from engine import raw_sqlite_commit_ms  # bench/engine.py: the harness's raw loop, in-process
from opsgate.engine.statuses import ExecutionStatus, StepRunStatus, Trigger
from opsgate.models import ExecutionTransition, NewStepRun, StepRunTransition
from opsgate.stores import SQLStore
from opsgate.stores.database import not_waiting
from opsgate.stores.sql import step_run_id

OWNER = "bench-worker"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def store_transition_ms(directory: Path, n: int) -> float:
    """Mean ms of one step transition persisted alone through the store."""
    store = SQLStore.open(f"sqlite:///{directory / 'opsgate.db'}")
    store.migrate()
    try:
        snapshot = store.save_snapshot("bench", "1.0.0", {"name": "bench", "steps": []})
        execution, _ = store.create_execution(
            workflow_name="bench",
            blueprint_digest=snapshot.digest,
            parameters={},
            requested_by="bench",
        )
        store.claim_executions(OWNER, lease_seconds=600, limit=1)
        store.write(
            [
                ExecutionTransition(
                    execution_id=execution.id,
                    trigger=Trigger.START,
                    expected=ExecutionStatus.PENDING,
                    actor=OWNER,
                    lease_owner=OWNER,
                )
            ]
        )
        runs = [NewStepRun(step_id=f"s{k}") for k in range(n // 2)]
        store.create_step_runs(execution.id, runs, lease_owner=OWNER)
        elapsed = 0.0
        for run in runs:
            run_id = step_run_id(execution.id, run.step_id, "")
            for trigger, expected in (
                (Trigger.START, StepRunStatus.PENDING),
                (Trigger.SUCCEED, StepRunStatus.RUNNING),
            ):
                change = StepRunTransition(
                    step_run_id=run_id,
                    trigger=trigger,
                    expected=expected,
                    actor=OWNER,
                    lease_owner=OWNER,
                )
                begin = time.perf_counter()
                with not_waiting():  # as the worker's calls on its event loop
                    store.write([change])
                elapsed += time.perf_counter() - begin
        events = store.list_events(execution.id, after_seq=2 + 2 * len(runs) - 3, limit=5)
        assert [e.type for e in events][-2:] == ["step.started", "step.succeeded"], events
        return 1000 * elapsed / (2 * len(runs))
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tmpdir", default=None, help="where the SQLite files go")
    args = parser.parse_args()
    raw, store = [], []
    for round_ in range(1, args.rounds + 1):
        directory = Path(tempfile.mkdtemp(prefix="opsgate-transitions-", dir=args.tmpdir))
        try:
            raw.append(raw_sqlite_commit_ms(str(directory), args.transitions))
            store.append(store_transition_ms(directory, args.transitions))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        say(
            f"round {round_}: raw commit {raw[-1]:.3f} ms, store transition {store[-1]:.3f} ms, "
            f"ratio {store[-1] / raw[-1]:.2f}x"
        )
    raw_ms, store_ms = statistics.median(raw), statistics.median(store)
    say(
        f"medians of {args.rounds} rounds of {args.transitions}: raw commit {raw_ms:.3f} ms, "
        f"store transition {store_ms:.3f} ms, ratio {store_ms / raw_ms:.2f}x (target <= 2x)"
    )


if __name__ == "__main__":
    main()

"""A worker in a process of its own, and what tests need to start, watch and kill such workers.

As a script::

    python -m tests.engine.worker_process DATABASE_URL [--lease SECONDS] [--owner NAME]
        [--capacity N]

opens a store on ``DATABASE_URL`` (already migrated: the test migrates before it starts workers,
so that two processes never race on the schema), registers the ``scripted`` action next to the
built-in ones and runs a :class:`~opsgate.worker.Worker` until it is killed. It logs to stderr;
its first line, ``worker <owner> ready``, says the store is open. Run it from the repository root
so that ``tests`` is importable (:class:`WorkerProcesses` does).

For tests: :class:`WorkerProcesses` starts such processes (``sys.executable``, stderr to a log
file each), kills them with ``SIGKILL``, and polls the database with a bounded deadline
(:meth:`WorkerProcesses.until`), failing early with the logs when a worker died on its own.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

from opsgate.actions.registry import ActionRegistry
from opsgate.actions.scripted import ScriptedAction
from opsgate.models import Execution
from opsgate.spec.model import WorkflowSpec
from opsgate.stores import SQLStore
from opsgate.stores.tables import executions
from opsgate.worker import Worker

logger = logging.getLogger("tests.engine.worker_process")

REPOSITORY = Path(__file__).resolve().parents[2]
#: How often :meth:`WorkerProcesses.until` looks at the database.
POLL_SECONDS = 0.02
#: The longest :meth:`WorkerProcesses.until` waits by default: a hang fails, it does not block.
DEADLINE_SECONDS = 20.0


# -------------------------------------------------------------------------------- the script


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.engine.worker_process")
    parser.add_argument("database_url", help="the store's URL (sqlite:///... or postgresql://...)")
    parser.add_argument("--lease", type=float, default=2.0, help="lease length in seconds")
    parser.add_argument("--owner", default=None, help="the worker's owner id (the events' actor)")
    parser.add_argument("--capacity", type=int, default=64, help="executions run at once")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    store = SQLStore.open(arguments.database_url)
    worker = Worker(
        store,
        ActionRegistry.builtin().with_actions(ScriptedAction()),
        owner=arguments.owner,
        lease_seconds=arguments.lease,
        capacity=arguments.capacity,
    )
    logger.info("worker %s ready", worker.owner)
    try:
        anyio.run(worker.run)
    finally:
        store.close()


# -------------------------------------------------------------------------------- for tests


@dataclass
class WorkerProcess:
    """One started worker process; ``killed`` once the test killed it on purpose."""

    owner: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    def kill(self) -> None:
        """``SIGKILL``, and reap the process: it writes nothing more after this returns."""
        self.killed = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def freeze(self, store: SQLStore, execution_id: str) -> None:
        """``SIGSTOP`` the process at a moment when it is not inside a write transaction on
        ``execution_id``: frozen mid-transaction, it would keep the row locked (PostgreSQL) or
        the database locked (SQLite), and no other worker could take the execution over."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            self.process.send_signal(signal.SIGSTOP)
            if not writing(store, execution_id):
                return
            self.process.send_signal(signal.SIGCONT)
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.owner} never left its write transactions")
            time.sleep(POLL_SECONDS)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@dataclass
class WorkerProcesses:
    """The worker processes of one test, all on the database at ``url``."""

    url: str
    directory: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, owner: str, *, lease: float = 1.0, capacity: int = 64) -> WorkerProcess:
        log = self.directory / f"{owner}.log"
        command = [
            sys.executable,
            "-m",
            "tests.engine.worker_process",
            self.url,
            "--lease",
            str(lease),
            "--owner",
            owner,
            "--capacity",
            str(capacity),
        ]
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=REPOSITORY,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = WorkerProcess(owner, process, log)
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.started:
            worker.kill()

    def until(
        self,
        predicate: Callable[[], bool],
        what: str,
        *,
        timeout: float = DEADLINE_SECONDS,
    ) -> None:
        """Poll ``predicate`` every 20 ms until it holds; fail after ``timeout`` seconds, or at
        once when a worker that the test did not kill has exited (with its log)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            for worker in self.started:
                if not worker.killed and worker.process.poll() is not None:
                    raise AssertionError(
                        f"worker {worker.owner} exited with {worker.process.returncode} while "
                        f"waiting for {what}:\n{worker.logs()}"
                    )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n{self.all_logs()}"
                )
            time.sleep(POLL_SECONDS)

    def all_logs(self) -> str:
        return "\n".join(f"--- {w.owner}:\n{w.logs()}" for w in self.started)


@contextmanager
def worker_processes(url: str, directory: Path) -> Iterator[WorkerProcesses]:
    """Worker processes that are all killed when the block ends, whatever happened in it."""
    workers = WorkerProcesses(url, directory)
    try:
        yield workers
    finally:
        workers.kill_all()


def writing(store: SQLStore, execution_id: str) -> bool:
    """Whether a transaction holds a write lock that a write on ``execution_id`` would wait for:
    its row's lock on PostgreSQL (every write of a worker updates the execution's row), the
    database's write lock on SQLite."""
    engine = store.engine
    if engine.dialect.name == "sqlite":
        probe = sqlite3.connect(str(engine.url.database), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
        return False
    row = sa.select(executions.c.id).where(executions.c.id == execution_id)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(row.with_for_update(nowait=True))
    except sa.exc.OperationalError:
        return True
    return False


def new_execution(
    store: SQLStore, spec: WorkflowSpec, parameters: Mapping[str, Any] | None = None
) -> Execution:
    """Snapshot ``spec`` and create a pending execution of it, as the service does."""
    content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    snapshot = store.save_snapshot(spec.name, spec.version, content)
    execution, _ = store.create_execution(
        workflow_name=spec.name,
        blueprint_digest=snapshot.digest,
        parameters=dict(parameters or {}),
        requested_by="alice",
    )
    return execution


if __name__ == "__main__":
    main()

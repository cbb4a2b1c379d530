"""Executions parked at approval gates: what they cost the server, and how fast a decision
resumes one.

    .venv/bin/python bench/approvals.py                      # 1000 parked, 20 timed approvals
    .venv/bin/python bench/approvals.py --parked 200 --db postgres

One process plays the server: a store, the real worker (running, as in ``opsgate serve``) and
the service. It starts N executions of a blueprint whose first step is gated, waits until every
one is ``waiting_approval``, then reports: resident memory (VmRSS) added by the N parked
executions, the worker's live runners and asyncio tasks, and the database connections checked
out (all should be zero: a parked execution is a row). Then it approves K of them, one at a
time, and measures the time from ``approve_step`` returning to the gated step's
``step.started`` event (the worker is woken in-process, as the MCP server wakes it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import sqlalchemy as sa

from opsgate.actions.registry import ActionRegistry
from opsgate.catalog import Catalog
from opsgate.service import Principal, Service
from opsgate.spec.blueprints import parse_blueprint_or_raise
from opsgate.spec.policies import PolicySet
from opsgate.spec.roles import RoleBook
from opsgate.stores import SQLStore
from opsgate.worker import Worker

BLUEPRINT = """
name: gated
version: "1"
steps:
  - id: change
    action: log
    approval: {approvers: {roles: [ops-manager]}}
    with: {message: changed}
"""
ROLES = RoleBook({"bob": frozenset({"ops-manager"})})
WAITING = sa.text("SELECT count(*) FROM executions WHERE status = 'waiting_approval'")
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def main(parked: int, timed: int, database_url: str) -> None:
    store = SQLStore.open(database_url)
    store.migrate()
    spec = parse_blueprint_or_raise(BLUEPRINT, "gated.yaml")
    worker = Worker(store, ActionRegistry.builtin(), policies=PolicySet((), ROLES))
    service = Service(
        store, Catalog(blueprints={"gated": spec}, policies=PolicySet((), ROLES)), wake=worker.wake
    )
    alice, bob = Principal("alice"), Principal("bob", frozenset({"ops-manager"}))
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        await anyio.sleep(0.5)
        gc.collect()
        before = rss_mb()
        tasks_before = len(asyncio.all_tasks())
        for _ in range(parked):
            await service.execute_workflow(alice, "gated", {})
        started = time.monotonic()
        while True:
            with store.engine.connect() as conn:
                waiting = conn.execute(WAITING).scalar_one()
            if waiting == parked:
                break
            await anyio.sleep(0.2)
        park_seconds = time.monotonic() - started
        await anyio.sleep(1.0)
        gc.collect()
        after = rss_mb()
        runners = len(worker._runners)
        tasks = len(asyncio.all_tasks()) - tasks_before
        pool = store.engine.pool
        checked_out = pool.checkedout() if hasattr(pool, "checkedout") else 0
        say(f"{parked} executions parked at their gate in {park_seconds:.1f}s")
        say(f"RSS before {before:.1f} MB, after {after:.1f} MB: +{after - before:.1f} MB")
        say(f"live runners {runners}, extra asyncio tasks {tasks}, connections out {checked_out}")

        pending = (await service.list_pending_approvals(bob)).approvals
        latencies = []
        for approval in pending[:timed]:
            await service.approve_step(bob, approval.approval_id)
            t0 = time.monotonic()
            while True:
                events = store.list_events(approval.execution_id)
                if any(e.type == "step.started" for e in events):
                    break
                await anyio.sleep(0.001)
            latencies.append((time.monotonic() - t0) * 1000)
        latencies.sort()
        say(
            f"approve -> step.started over {len(latencies)} approvals: median "
            f"{statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms"
        )
        group.cancel_scope.cancel()
    store.close()


def _database(kind: str) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp()}/approvals.db", None
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return f"{PG}?options=-csearch_path%3D{schema}", schema


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parked", type=int, default=1000)
    parser.add_argument("--timed", type=int, default=20)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    options = parser.parse_args()
    url, schema = _database(options.db)
    try:
        anyio.run(main, options.parked, options.timed, url)
    finally:
        if schema is not None:
            engine = sa.create_engine(PG)
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            engine.dispose()

"""opsgate scheduler benchmark: 10,000 schedules; CPU while idle, and fire latency.

    .venv/bin/python bench/scheduler.py --db both                    # 10,000 schedules, 60 s idle
    .venv/bin/python bench/scheduler.py --db sqlite --idle-seconds 10 --fires 50 --json out.json

Per database (a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards; the helpers
come from ``bench/engine.py``), the real :class:`~opsgate.scheduler.Scheduler` runs with the
real :class:`~opsgate.service.Service` (policies, parameter checks, blueprint snapshot), no
worker (executions stay pending), in two phases:

* **idle**: ``--schedules`` schedules (default 10,000) whose next fires are all more than the
  window away (daily, at random times); the scheduler runs for ``--idle-seconds`` (default 60).
  Reported: the process's CPU seconds (user + system, all threads) and the SQL statements it ran.
* **firing**: ``--fires`` more schedules (default 300), each with a 6-field cron naming one
  second of the next ``--fire-seconds`` (default 30), spread evenly; the 10,000 stay. Reported:
  fire latency = the execution's ``created_at`` minus its fire time, p50/p99/max, and CPU.

Schedules are inserted in bulk for the set-up (their ``next_fire_at`` computed as the service
computes it); every fire goes through the same code as in production.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from engine import fresh_database
from opsgate.actions.registry import ActionRegistry
from opsgate.catalog import Catalog
from opsgate.scheduler import Scheduler
from opsgate.schedules.cron import parse_cron
from opsgate.schedules.fires import first_fire
from opsgate.service import Service
from opsgate.spec.blueprints import parse_blueprint
from opsgate.stores import SQLStore
from opsgate.stores.tables import executions, schedule_fires, schedules

WORKFLOW = "bench_tick"
BLUEPRINT = f"""\
name: {WORKFLOW}
version: "1"
parameters:
  n: {{type: integer, default: 0}}
steps:
  - {{id: note, action: log, with: {{message: "tick {{{{ params.n }}}}"}}}}
"""


def say(text: str = "") -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rows(count: int, crons: list[str], now: datetime, prefix: str) -> list[dict[str, Any]]:
    """Schedule rows as ``schedule_workflow`` would save them."""
    found = []
    for index, cron in enumerate(crons[:count]):
        found.append(
            {
                "id": f"sch_{prefix}{index:06d}",
                "workflow_name": WORKFLOW,
                "cron": cron,
                "timezone": "UTC",
                "parameters": {"n": index},
                "overlap_policy": "allow",
                "misfire_policy": "skip",
                "owner": "bench",
                "enabled": True,
                "next_fire_at": first_fire(parse_cron(cron, "UTC"), now, None, None),
                "catchup_window_seconds": 3600,
                "misfire_grace_seconds": 60,
                "created_at": now,
                "updated_at": now,
            }
        )
    return found


class StatementCounter:
    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await scheduler.run()


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    spec, issues = parse_blueprint(BLUEPRINT, "bench_tick.yaml", ActionRegistry.load().infos())
    assert spec is not None, issues
    store = SQLStore.open(url)
    store.migrate()
    service = Service(store, Catalog(blueprints={WORKFLOW: spec}))
    scheduler = Scheduler(store, service)
    service.wake_scheduler = scheduler.wake
    counter = StatementCounter(store.engine)
    rng = random.Random(7)
    now = datetime.now(UTC)
    # Daily at random times more than the idle window (and the firing phase) away.
    soon = now + timedelta(seconds=args.idle_seconds + args.fire_seconds + 120)
    daily: list[str] = []
    while len(daily) < args.schedules:
        moment = now + timedelta(seconds=rng.uniform(0, 86400))
        if not now < moment < soon:
            daily.append(f"{moment.second} {moment.minute} {moment.hour} * * *")
    started = time.monotonic()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(schedules), rows(args.schedules, daily, now, "d"))
    say(f"  {args.schedules} schedules inserted in {time.monotonic() - started:.1f} s")

    counter.count = 0
    cpu, wall = time.process_time(), time.monotonic()
    anyio.run(run_for, scheduler, args.idle_seconds)
    idle = {
        "seconds": round(time.monotonic() - wall, 2),
        "cpu_seconds": round(time.process_time() - cpu, 4),
        "statements": counter.count,
    }
    idle["cpu_percent"] = round(100 * idle["cpu_seconds"] / idle["seconds"], 3)
    say(f"  idle: {idle}")

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    spread = args.fire_seconds / args.fires
    moments = [start + timedelta(seconds=int(i * spread)) for i in range(args.fires)]
    crons = [f"{m.second} {m.minute} {m.hour} {m.day} {m.month} *" for m in moments]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(schedules), rows(args.fires, crons, datetime.now(UTC), "f"))
    scheduler.wake()
    counter.count = 0
    cpu, wall = time.process_time(), time.monotonic()
    anyio.run(run_for, scheduler, args.fire_seconds + 5)
    firing_cpu = time.process_time() - cpu
    with store.engine.connect() as conn:
        found = conn.execute(
            sa.select(schedule_fires.c.fire_at, executions.c.created_at).join(
                executions, executions.c.id == schedule_fires.c.execution_id
            )
        ).all()
    store.close()
    latencies = [(row.created_at - row.fire_at).total_seconds() * 1000 for row in found]
    assert len(latencies) == args.fires, f"{len(latencies)} of {args.fires} fires started"
    firing = {
        "fires": len(latencies),
        "latency_ms_p50": round(percentile(latencies, 0.5), 1),
        "latency_ms_p99": round(percentile(latencies, 0.99), 1),
        "latency_ms_max": round(max(latencies), 1),
        "latency_ms_mean": round(statistics.fmean(latencies), 1),
        "cpu_seconds": round(firing_cpu, 3),
        "statements": counter.count,
    }
    say(f"  firing: {firing}")
    return {"idle": idle, "firing": firing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--fires", type=int, default=300)
    parser.add_argument("--fire-seconds", type=int, default=30)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    results = {}
    for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        say(f"{db}:")
        with fresh_database(db, args.tmpdir) as url:
            results[db] = measure(url, args)
    report = json.dumps(results, indent=2)
    sys.stdout.write(report + "\n")
    if args.json is not None:
        args.json.write_text(report)


if __name__ == "__main__":
    main()

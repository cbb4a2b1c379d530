"""Two real ``opsgate scheduler`` processes on one database fire an every-second schedule for
10 seconds: every occurrence exactly once, checked in the database (PostgreSQL and SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from opsgate.models import MisfirePolicy, OverlapPolicy
from opsgate.stores import SQLStore
from opsgate.stores.tables import executions, schedule_fires

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = """\
name: tick
version: "1"
steps:
  - {id: note, action: log, with: {message: tick}}
"""
#: Time for both processes to start before the first fire (they catch up within grace anyway).
STARTUP = timedelta(seconds=2)
RUN = timedelta(seconds=10)


def start_scheduler(database_url: str, folder: Path) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "OPSGATE_DATABASE_URL": database_url,
        "OPSGATE_BLUEPRINTS": str(folder / "blueprints"),
        "OPSGATE_POLICIES": str(folder / "policies"),
        "OPSGATE_PRINCIPAL": "alice",
    }
    environment.pop("OPSGATE_INVENTORY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "opsgate", "scheduler"],
        cwd=folder,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        _out, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate()
    return err


def test_two_scheduler_processes_fire_each_second_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "blueprints" / "tick.yaml").write_text(BLUEPRINT)
    (tmp_path / "policies").mkdir()
    store = SQLStore.open(database_url)
    store.migrate()
    first = datetime.now(UTC).replace(microsecond=0) + STARTUP
    schedule = store.create_schedule(
        workflow_name="tick",
        cron="* * * * * *",
        timezone="UTC",
        parameters={},
        owner="alice",
        overlap_policy=OverlapPolicy.ALLOW,
        misfire_policy=MisfirePolicy.RUN_ALL,
        catchup_window_seconds=60,
        next_fire_at=first,
    )
    processes = [start_scheduler(database_url, tmp_path) for _ in range(2)]
    try:
        time.sleep(max(0.0, (first + RUN - datetime.now(UTC)).total_seconds()))
    finally:
        errors = [stop(process) for process in processes]
    for error in errors:
        assert "Traceback" not in error, error
    with store.engine.connect() as conn:
        fires = conn.execute(
            sa.select(schedule_fires).where(schedule_fires.c.schedule_id == schedule.id)
        ).all()
        started = conn.execute(
            sa.select(executions.c.id, executions.c.created_at).where(
                executions.c.schedule_id == schedule.id
            )
        ).all()
    store.close()
    moments = sorted(fire.fire_at for fire in fires)
    expected = [first + timedelta(seconds=s) for s in range(len(moments))]
    assert len(moments) >= RUN.total_seconds()
    assert moments == expected  # every second from the first, none twice, none missing
    assert {str(fire.outcome) for fire in fires} == {"started"}
    by_fire = [fire.execution_id for fire in fires]
    assert len(set(by_fire)) == len(by_fire) == len(started)  # one execution per occurrence
    assert set(by_fire) == {row.id for row in started}

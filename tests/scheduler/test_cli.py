"""``opsgate schedule`` and ``opsgate schedules`` as real processes on a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BLUEPRINT = """\
name: tick
version: "1"
parameters:
  service: {type: string, required: true, pattern: "^[a-z]+$"}
steps:
  - {id: note, action: log, with: {message: "tick {{ params.service }}"}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "blueprints" / "tick.yaml").write_text(BLUEPRINT)
    (tmp_path / "policies").mkdir()
    return tmp_path


def opsgate(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "OPSGATE_DATABASE_URL": f"sqlite:///{folder / 'opsgate.db'}",
        "OPSGATE_BLUEPRINTS": str(folder / "blueprints"),
        "OPSGATE_POLICIES": str(folder / "policies"),
        "OPSGATE_PRINCIPAL": "alice",
        "COLUMNS": "200",  # rich tables fit the terminal; the default 80 squeezes them
    }
    environment.pop("OPSGATE_INVENTORY", None)
    result = subprocess.run(
        [sys.executable, "-m", "opsgate", *args],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_schedule_prints_the_fire_times_and_the_policies(folder: Path) -> None:
    result = opsgate(
        folder, "schedule", "tick", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
        "-p", "service=web", "--overlap", "queue",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "tick: 30 2 * * * Europe/Berlin" in result.stdout
    assert "02:30:00+0" in result.stdout  # local times with their offset
    assert "overlap: If the previous execution is still active" in result.stdout
    schedule_id = result.stdout.split()[0]
    assert schedule_id.startswith("sch_")
    table = opsgate(folder, "schedules")
    assert schedule_id in table.stdout and "enabled" in table.stdout
    upcoming = opsgate(folder, "schedules", "--upcoming", "48", "--json")
    fires = json.loads(upcoming.stdout)["executions"]
    assert [fire["schedule_id"] for fire in fires] == [schedule_id] * 2


def test_a_bad_schedule_lists_every_problem_and_exits_2(folder: Path) -> None:
    result = opsgate(
        folder, "schedule", "tick", "--cron", "0 25 * * *", "--tz", "Europe/Berln",
        "-p", "service=Web!",
    )  # fmt: skip
    assert result.returncode == 2
    for expected in ("3 problem(s)", "cron:", "timezone:", "parameters.service:"):
        assert expected in result.stderr
    assert "nothing was saved" in result.stderr

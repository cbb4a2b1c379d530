"""A scheduler on a real store (SQLite file and PostgreSQL) with a real service and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from opsgate.catalog import Catalog
from opsgate.scheduler import Scheduler
from opsgate.service import Principal, Service
from opsgate.spec.policies import PolicySet, parse_policy_file
from opsgate.stores import SQLStore
from opsgate.stores.tables import events, schedule_fires
from opsgate.views import ScheduleView
from tests.clocks import FakeClock
from tests.engine.rehearsal import load_spec

ALICE = Principal("alice", frozenset({"operator"}))
BOB = Principal("bob", frozenset({"operator"}))

FREEZE = """
rules:
  - id: freeze-db
    match: "params.service == 'db'"
    effect: deny
    reason: Database changes are frozen this week.
"""


def nightly(block_file: Path) -> dict[str, Any]:
    return {
        "name": "nightly",
        "version": "1",
        "parameters": {
            "service": {"type": "string", "required": True, "pattern": "^[a-z]+$"},
            "batch": {"type": "integer", "default": 2, "min": 1, "max": 5},
        },
        "steps": [{"id": "work", "action": "scripted", "with": {"block_file": str(block_file)}}],
    }


def policies(text: str) -> PolicySet:
    parsed, issues = parse_policy_file(text, "policy.yaml")
    assert not issues, issues
    return PolicySet(rules=parsed.rules)


@dataclass
class Harness:
    """Everything a scheduler test drives: time moves only when the test moves it."""

    store: SQLStore
    clock: FakeClock
    service: Service
    scheduler: Scheduler

    async def schedule(
        self, cron: str = "0 * * * *", timezone: str = "UTC", **options: Any
    ) -> ScheduleView:
        parameters = options.pop("parameters", {"service": "web"})
        options.setdefault("overlap_policy", "allow")  # no worker runs: executions stay active
        return await self.service.schedule_workflow(
            ALICE, "nightly", cron, timezone, parameters, **options
        )

    async def at(self, moment: datetime) -> None:
        """Set the clock to ``moment`` and let the scheduler handle what is due."""
        self.clock.now = moment
        await self.scheduler.run_due()

    def fires(self, schedule_id: str) -> list[tuple[datetime, str, str | None]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(schedule_fires)
                .where(schedule_fires.c.schedule_id == schedule_id)
                .order_by(schedule_fires.c.fire_at)
            ).all()
        return [(row.fire_at, str(row.outcome), row.execution_id) for row in rows]

    def schedule_event_count(self) -> int:
        with self.store.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(events.c.schedule_id.is_not(None))
            return int(conn.execute(query).scalar_one())

    def events(self, schedule_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.type, events.c.data)
                .where(events.c.schedule_id == schedule_id)
                .order_by(events.c.id)
            ).all()
        return [(str(row.type), dict(row.data)) for row in rows]


@pytest.fixture
def harness(store: SQLStore, clock: FakeClock, tmp_path: Path) -> Iterator[Harness]:
    spec = load_spec(nightly(tmp_path / "release"))
    service = Service(store, Catalog(blueprints={spec.name: spec}))
    service.clock = clock
    scheduler = Scheduler(store, service, clock=clock)
    service.wake_scheduler = scheduler.wake
    yield Harness(store, clock, service, scheduler)

"""Rehearsals: each fixture in ``rehearsals/`` runs through the real engine on a real store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from opsgate.stores.sql import utc_now
from tests.engine.rehearsal import (
    Rehearsal,
    fixture_paths,
    load_spec,
    matches_order,
    most_running_at_once,
    run_key,
    started_order,
)

pytestmark = pytest.mark.anyio


FIXTURES = [
    pytest.param(YAML(typ="safe").load(path.read_text()), id=path.stem) for path in fixture_paths()
]


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_rehearsal(fixture: dict[str, Any], tmp_path: Path) -> None:
    rehearsal = Rehearsal.open(f"sqlite:///{tmp_path / 'r.db'}")
    if fixture.get("clock") == "real":
        rehearsal = Rehearsal.open(f"sqlite:///{tmp_path / 'real.db'}", clock=utc_now)  # type: ignore[arg-type]
    spec = load_spec(fixture["blueprint"])
    execution = rehearsal.start(spec, fixture.get("parameters"))
    final = await rehearsal.drive(execution.id)
    expect = fixture["expect"]
    events = rehearsal.events(execution.id)
    runs = {run_key(run): run for run in rehearsal.runs(execution.id)}

    assert final.status == expect["status"], final.error
    if "order" in expect:
        order = started_order(events)
        assert matches_order(order, expect["order"]), order
    for key, status in expect.get("steps", {}).items():
        assert runs[key].status == status, (key, runs[key])
    for key, outputs in expect.get("outputs", {}).items():
        assert dict(runs[key].outputs or {}) == outputs
    for key, attempts in expect.get("attempts", {}).items():
        assert runs[key].attempt == attempts
    for step_id, delays in expect.get("delays", {}).items():
        retrying = [e for e in events if e.type == "step.retrying" and e.step_id == step_id]
        assert [e.data["delay_seconds"] for e in retrying] == delays
    for step_id, failures in expect.get("no_start_after_failures", {}).items():
        failed_at = [
            i for i, e in enumerate(events) if e.type == "step.failed" and e.step_id == step_id
        ]
        started_at = [
            i for i, e in enumerate(events) if e.type == "step.started" and e.step_id == step_id
        ]
        assert len(failed_at) >= failures
        assert not [i for i in started_at if i > failed_at[failures - 1]]
    for step_id, count in expect.get("not_run_at_least", {}).items():
        cancelled = [
            r for key, r in runs.items() if r.step_id == step_id and r.status == "cancelled"
        ]
        assert len(cancelled) >= count
    for step_id, peak in expect.get("max_parallel", {}).items():
        assert most_running_at_once(events, step_id) == peak
    if "overlapping" in expect:
        assert most_running_at_once_of(events, expect["overlapping"]) == len(expect["overlapping"])
    if "rollback_order" in expect:
        undone = [e.step_id for e in events if e.type == "step.rolled_back"]
        assert undone == expect["rollback_order"]
    for step_id, reason in expect.get("skip_reasons", {}).items():
        [skipped] = [e for e in events if e.type == "step.skipped" and e.step_id == step_id]
        assert skipped.data["reason"] == reason
    if "error_contains" in expect:
        assert expect["error_contains"] in str(final.error)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def most_running_at_once_of(events: list[Any], step_ids: list[str]) -> int:
    running: set[str] = set()
    peak = 0
    for event in events:
        if event.step_id not in step_ids:
            continue
        if event.type == "step.started":
            running.add(event.step_id)
            peak = max(peak, len(running))
        elif event.type.startswith("step."):
            running.discard(event.step_id)
    return peak


def test_every_engine_behaviour_has_a_rehearsal() -> None:
    assert len(fixture_paths()) >= 13

"""Blueprint rehearsals: a YAML fixture runs through the real conductor, worker and store.

A fixture holds the ``blueprint`` (steps use the ``scripted`` action), its ``parameters``, an
optional ``control`` script (operator actions at given moments) and what must come out::

    expect:
      status: succeeded                 # the execution's final status
      order: [a, [b, c], d]             # step.started order; a nested list is any order
      steps: {a: succeeded, d: skipped} # each run's final status (fan-out: step.item_key)
      attempts: {flaky: 3}
      delays: {flaky: [1.0, 2.0]}       # seconds between attempts, from step.retrying events
      rollback_order: [c, a]            # step.rolled_back order
      max_parallel: {fan: 2}            # the most runs of a step running at once (from events)
      no_start_after_failures: {fan: 3} # no run of the step starts after its 3rd failure
      not_run_at_least: {fan: 4}        # at least 4 runs were cancelled before they started

The clock is a fake one that ticks a millisecond per reading (so completion order is strict)
and jumps to the next wake-up whenever the worker is idle, so retry delays cost no real time;
the random draw is fixed at 0.5. ``clock: real`` uses real time (for execution timeouts).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from opsgate.actions.registry import ActionRegistry
from opsgate.actions.scripted import ScriptedAction
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.models import Event, Execution, StepRun
from opsgate.spec.blueprints import parse_blueprint
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.parameters import validate_parameters
from opsgate.stores import SQLStore
from opsgate.worker import Worker
from tests.clocks import FakeClock

REGISTRY = ActionRegistry.builtin().with_actions(ScriptedAction())


def load_spec(blueprint: Mapping[str, Any], registry: ActionRegistry = REGISTRY) -> WorkflowSpec:
    """Validate a fixture's blueprint with the real loader (with the scripted action)."""
    buffer = io.StringIO()
    YAML().dump(dict(blueprint), buffer)
    spec, issues = parse_blueprint(buffer.getvalue(), "rehearsal.yaml", registry.infos())
    if spec is None:
        raise AssertionError("rehearsal blueprint is invalid:\n" + "\n".join(map(str, issues)))
    return spec


@dataclass
class Rehearsal:
    """One execution of a blueprint on a real store, driven until it ends."""

    store: SQLStore
    clock: FakeClock
    worker: Worker

    @classmethod
    def open(cls, url: str, clock: FakeClock | None = None) -> Rehearsal:
        clock = clock or FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
        store = SQLStore.open(url, clock=clock)
        store.migrate()
        worker = Worker(store, REGISTRY, clock=clock, draw=lambda: 0.5, lease_seconds=30)
        return cls(store, clock, worker)

    def start(
        self,
        spec: WorkflowSpec,
        parameters: Mapping[str, Any] | None = None,
        requested_by: str = "alice",
    ) -> Execution:
        values, problems = validate_parameters(spec.parameters, dict(parameters or {}))
        assert not problems, problems
        content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        snapshot = self.store.save_snapshot(spec.name, spec.version, content)
        execution, _ = self.store.create_execution(
            workflow_name=spec.name,
            blueprint_digest=snapshot.digest,
            parameters=values,
            requested_by=requested_by,
        )
        return execution

    async def drive(self, execution_id: str, *, max_rounds: int = 200) -> Execution:
        """Run the worker until the execution ends, jumping the clock over idle waits."""
        for _ in range(max_rounds):
            await self.worker.run(until_idle=True)
            execution = self.store.get_execution(execution_id)
            if execution.status in EXECUTION_TERMINAL:
                return execution
            due = self.store.next_wake_at()
            if due is None:
                return execution
            if due > self.clock.now:
                self.clock.advance(due - self.clock.now)
        raise AssertionError(f"execution {execution_id} did not end in {max_rounds} rounds")

    def events(self, execution_id: str) -> list[Event]:
        return self.store.list_events(execution_id, limit=500)

    def runs(self, execution_id: str) -> list[StepRun]:
        return self.store.list_step_runs(execution_id)


def run_key(run: StepRun) -> str:
    return f"{run.step_id}.{run.item_key}" if run.item_key else run.step_id


def started_order(events: list[Event]) -> list[str]:
    return [e.step_id or "" for e in events if e.type == "step.started"]


def most_running_at_once(events: list[Event], step_id: str) -> int:
    running = peak = 0
    for event in events:
        if event.step_id != step_id:
            continue
        if event.type == "step.started":
            running += 1
            peak = max(peak, running)
        elif event.type in (
            "step.succeeded",
            "step.failed",
            "step.retrying",
            "step.timed_out",
            "step.cancelled",
            "step.interrupted",
        ):
            running -= 1
    return peak


def matches_order(actual: list[str], expected: list[Any]) -> bool:
    """``expected`` items are step ids or lists of ids that may start in any order."""
    position = 0
    for group in expected:
        ids = group if isinstance(group, list) else [group]
        if sorted(actual[position : position + len(ids)]) != sorted(ids):
            return False
        position += len(ids)
    return position == len(actual)


def fixture_paths() -> list[Path]:
    return sorted((Path(__file__).parent / "rehearsals").glob("*.yaml"))

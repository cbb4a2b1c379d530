"""Operator control of running executions: cancel (with and without cleanup), pause and resume,
retry_step — through the service, with a real worker and store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from ruamel.yaml import YAML

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.catalog import Catalog
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.errors import InvalidTransitionError, StepError
from opsgate.models import Execution
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.stores.sql import utc_now
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY, load_spec

pytestmark = pytest.mark.anyio

ALICE = Principal("alice", frozenset({"operator"}))


class FailUntilFixed(Action[ActionArguments]):
    """Fails (non-retryable) until the test flips ``fixed``: a step an operator reruns."""

    name = "fail_until_fixed"
    arguments = ActionArguments
    changes_things = False
    description = "fails until fixed"

    def __init__(self) -> None:
        self.fixed = False

    async def run(self, args: ActionArguments, ctx: StepContext) -> dict[str, Any]:
        if not self.fixed:
            raise StepError("not fixed yet", retryable=False)
        return {"fixed": True}


@dataclass
class Harness:
    store: SQLStore
    service: Service
    worker: Worker
    block: Path

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll the database until ``predicate`` holds (bounded: a hang fails the test).

        Polling, because the worker writes from its own threads and there is no in-process
        event bus to subscribe to yet.
        """
        with anyio.fail_after(10):
            while not predicate():  # noqa: ASYNC110
                await anyio.sleep(0.01)

    def execution(self, execution_id: str) -> Execution:
        return self.store.get_execution(execution_id)

    def run_status(self, execution_id: str, step_id: str) -> str | None:
        runs = [r for r in self.store.list_step_runs(execution_id) if r.step_id == step_id]
        return str(runs[0].status) if runs else None

    async def ended(self, execution_id: str, *, statuses: Any = EXECUTION_TERMINAL) -> Execution:
        await self.until(lambda: self.execution(execution_id).status in statuses, "end")
        return self.execution(execution_id)


BLUEPRINT = """
name: guarded
version: "1"
steps:
  - {id: prepare, action: scripted, rollback: {action: scripted}}
  - id: slow
    action: scripted
    depends_on: [prepare]
    with: {block_file: "BLOCK"}
  - {id: finish, action: scripted, depends_on: [slow]}
"""


@asynccontextmanager
async def harness(tmp_path: Path, blueprint: str, *extra: Action[Any]) -> AsyncIterator[Harness]:
    block = tmp_path / "release"
    registry = REGISTRY.with_actions(*extra)
    spec = load_spec(YAML(typ="safe").load(blueprint.replace("BLOCK", str(block))), registry)
    store = SQLStore.open(f"sqlite:///{tmp_path / 'c.db'}", clock=utc_now)
    store.migrate()
    worker = Worker(store, registry, lease_seconds=5)
    service = Service(store, Catalog(blueprints={spec.name: spec}), wake=worker.wake)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            yield Harness(store, service, worker, block)
            group.cancel_scope.cancel()
    finally:
        store.close()  # also when the test failed: no connection is left for a later test


async def test_cancel_with_cleanup_stops_the_running_step_and_rolls_back(tmp_path: Path) -> None:
    async with harness(tmp_path, BLUEPRINT) as h:
        started = await h.service.execute_workflow(ALICE, "guarded", {})
        await h.until(lambda: h.run_status(started.execution_id, "slow") == "running", "slow")
        await h.service.cancel_execution(ALICE, started.execution_id, cleanup=True)
        final = await h.ended(started.execution_id, statuses={"rolled_back", "rollback_failed"})
        assert final.status == "rolled_back"
        assert h.run_status(started.execution_id, "prepare") == "rolled_back"
        assert h.run_status(started.execution_id, "slow") == "cancelled"
        assert h.run_status(started.execution_id, "finish") is None


async def test_cancel_without_cleanup_just_stops(tmp_path: Path) -> None:
    async with harness(tmp_path, BLUEPRINT) as h:
        started = await h.service.execute_workflow(ALICE, "guarded", {})
        await h.until(lambda: h.run_status(started.execution_id, "slow") == "running", "slow")
        await h.service.cancel_execution(ALICE, started.execution_id, cleanup=False)
        await h.until(lambda: h.run_status(started.execution_id, "slow") == "cancelled", "stop")
        final = h.execution(started.execution_id)
        assert final.status == "cancelled"
        assert h.run_status(started.execution_id, "prepare") == "succeeded"
        with pytest.raises(InvalidTransitionError, match="it is cancelled"):
            await h.service.cancel_execution(ALICE, started.execution_id)


async def test_pause_lets_the_running_step_finish_and_starts_nothing_until_resumed(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, BLUEPRINT) as h:
        started = await h.service.execute_workflow(ALICE, "guarded", {})
        execution_id = started.execution_id
        await h.until(lambda: h.run_status(execution_id, "slow") == "running", "slow")
        paused = await h.service.pause_execution(ALICE, execution_id)
        assert paused.status == "paused"
        h.block.touch()
        await h.until(lambda: h.run_status(execution_id, "slow") == "succeeded", "slow done")
        await h.until(lambda: h.execution(execution_id).lease_owner is None, "parked")
        assert h.run_status(execution_id, "finish") is None
        assert h.execution(execution_id).status == "paused"
        await h.service.resume_execution(ALICE, execution_id)
        final = await h.ended(execution_id)
        assert final.status == "succeeded"
        types = [e.type for e in h.store.list_events(execution_id, limit=500)]
        assert types.index("execution.paused") < types.index("execution.resumed")


async def test_pausing_a_finished_execution_names_its_status(tmp_path: Path) -> None:
    async with harness(tmp_path, BLUEPRINT) as h:
        h.block.touch()
        started = await h.service.execute_workflow(ALICE, "guarded", {})
        await h.ended(started.execution_id)
        with pytest.raises(InvalidTransitionError, match="it is succeeded"):
            await h.service.pause_execution(ALICE, started.execution_id)
        with pytest.raises(InvalidTransitionError, match="it is succeeded"):
            await h.service.resume_execution(ALICE, started.execution_id)


RERUN_BLUEPRINT = """
name: rerun
version: "1"
rollback_on_failure: false
steps:
  - {id: first, action: scripted}
  - {id: fragile, action: fail_until_fixed, depends_on: [first]}
  - {id: last, action: scripted, depends_on: [fragile]}
"""


async def test_retry_step_reruns_the_failed_step_and_continues(tmp_path: Path) -> None:
    fragile = FailUntilFixed()
    async with harness(tmp_path, RERUN_BLUEPRINT, fragile) as h:
        started = await h.service.execute_workflow(ALICE, "rerun", {})
        failed = await h.ended(started.execution_id)
        assert failed.status == "failed"
        assert "not fixed yet" in str(failed.error)
        fragile.fixed = True
        view = await h.service.retry_step(ALICE, started.execution_id, "fragile")
        assert view.status == "running"
        final = await h.ended(started.execution_id)
        assert final.status == "succeeded"
        starts = [
            e.step_id
            for e in h.store.list_events(started.execution_id, limit=500)
            if e.type == "step.started"
        ]
        assert starts == ["first", "fragile", "fragile", "last"]

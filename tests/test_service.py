"""Use cases through the service on both databases: idempotency keys, parameter checks, locks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from ruamel.yaml import YAML

from opsgate.catalog import Catalog
from opsgate.errors import ConflictError, InvalidParametersError, NotFoundError
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.stores.sql import utc_now
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY, load_spec

pytestmark = pytest.mark.anyio

ALICE = Principal("alice")
BOB = Principal("bob")

BLUEPRINTS = """
- name: deploy
  version: "1"
  parameters:
    host: {type: string, required: true, pattern: "^[a-z0-9-]+$"}
    replicas: {type: integer, default: 2, min: 1, max: 5}
  concurrency: {locks: ["host:{{ params.host }}"], on_conflict: queue}
  steps:
    - {id: ship, action: scripted, with: {block_file: "BLOCK"}}
- name: exclusive
  version: "1"
  concurrency: {on_conflict: reject}
  steps:
    - {id: work, action: scripted, with: {block_file: "BLOCK"}}
"""


@asynccontextmanager
async def running(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Service, SQLStore]]:
    block = tmp_path / "release"
    documents = YAML(typ="safe").load(BLUEPRINTS.replace("BLOCK", str(block)))
    specs = [load_spec(document) for document in documents]
    store = SQLStore.open(database_url, clock=utc_now)
    store.migrate()
    worker = Worker(store, REGISTRY, lease_seconds=5)
    service = Service(store, Catalog(blueprints={s.name: s for s in specs}), wake=worker.wake)
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        yield service, store
        group.cancel_scope.cancel()
    store.close()


async def wait_for(predicate: Any) -> None:
    """Poll the database (the worker writes from its threads; no event bus to await yet)."""
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_the_same_idempotency_key_returns_the_same_execution(
    database_url: str, tmp_path: Path
) -> None:
    async with running(database_url, tmp_path) as (service, _):
        first = await service.execute_workflow(
            ALICE, "deploy", {"host": "web-1"}, idempotency_key="k1"
        )
        again = await service.execute_workflow(
            ALICE, "deploy", {"host": "web-1"}, idempotency_key="k1"
        )
        assert (again.execution_id, again.created) == (first.execution_id, False)
        other = await service.execute_workflow(
            BOB, "deploy", {"host": "web-2"}, idempotency_key="k1"
        )
        assert other.execution_id != first.execution_id and other.created
        with pytest.raises(ConflictError, match="k1"):
            await service.execute_workflow(ALICE, "deploy", {"host": "web-9"}, idempotency_key="k1")
        (tmp_path / "release").touch()


async def test_parameters_are_checked_and_defaults_stored(
    database_url: str, tmp_path: Path
) -> None:
    async with running(database_url, tmp_path) as (service, store):
        with pytest.raises(InvalidParametersError) as raised:
            await service.execute_workflow(
                ALICE, "deploy", {"host": "Bad Host!", "replicas": 9, "extra": 1}
            )
        message = str(raised.value)
        assert "host" in message and "replicas" in message and "extra" in message
        assert store.list_executions(limit=10).items == []
        with pytest.raises(NotFoundError, match="did you mean 'deploy'"):
            await service.execute_workflow(ALICE, "deplyo", {})
        started = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        stored = store.get_execution(started.execution_id)
        assert dict(stored.parameters) == {"host": "web-1", "replicas": 2}
        (tmp_path / "release").touch()


async def test_a_held_lock_queues_the_next_execution_until_released(
    database_url: str, tmp_path: Path
) -> None:
    async with running(database_url, tmp_path) as (service, store):
        first = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        second = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        elsewhere = await service.execute_workflow(ALICE, "deploy", {"host": "web-2"})

        def status(execution_id: str) -> str:
            return str(store.get_execution(execution_id).status)

        await wait_for(
            lambda: (
                status(first.execution_id) == "running"
                and status(elsewhere.execution_id) == "running"
            )
        )
        assert status(second.execution_id) == "pending"
        (tmp_path / "release").touch()
        await wait_for(lambda: status(second.execution_id) == "succeeded")
        assert status(first.execution_id) == "succeeded"
        first_end = store.get_execution(first.execution_id).finished_at
        second_start = store.get_execution(second.execution_id).started_at
        assert first_end is not None and second_start is not None
        assert second_start >= first_end


async def test_on_conflict_reject_refuses_while_the_lock_is_held(
    database_url: str, tmp_path: Path
) -> None:
    async with running(database_url, tmp_path) as (service, store):
        first = await service.execute_workflow(ALICE, "exclusive", {})
        with pytest.raises(ConflictError, match="on_conflict: reject"):
            await service.execute_workflow(ALICE, "exclusive", {})
        refused = [e for e in store.list_executions(limit=10).items if e.id != first.execution_id]
        assert [str(e.status) for e in refused] == ["failed"]
        (tmp_path / "release").touch()
        await wait_for(lambda: store.get_execution(first.execution_id).status == "succeeded")
        again = await service.execute_workflow(ALICE, "exclusive", {})
        await wait_for(lambda: store.get_execution(again.execution_id).status == "succeeded")


async def test_status_and_events_read_models(database_url: str, tmp_path: Path) -> None:
    async with running(database_url, tmp_path) as (service, store):
        (tmp_path / "release").touch()
        started = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})

        def closed() -> bool:  # ended, and its worker has let go (locks released)
            execution = store.get_execution(started.execution_id)
            return execution.status == "succeeded" and execution.lease_owner is None

        await wait_for(closed)
        view = await service.get_workflow_status(started.execution_id)
        assert (view.status, view.progress, view.steps_completed, view.total_steps) == (
            "succeeded",
            100.0,
            1,
            1,
        )
        assert view.steps[0].runs[0].duration_seconds is not None
        page = await service.get_execution_events(started.execution_id, limit=2)
        assert [e.seq for e in page.events] == [1, 2]
        assert page.next_after_seq == 2
        rest = await service.get_execution_events(started.execution_id, after_seq=2)
        assert rest.next_after_seq is None
        assert [e.type for e in rest.events][-2:] == ["execution.succeeded", "lock.released"]
        metrics = await service.get_workflow_metrics("deploy")
        assert (metrics.metrics[0].total, metrics.metrics[0].succeeded) == (1, 1)


async def test_cancelling_a_queued_execution_gives_up_its_place(
    database_url: str, tmp_path: Path
) -> None:
    async with running(database_url, tmp_path) as (service, store):
        first = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        second = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        third = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        await wait_for(lambda: store.get_execution(first.execution_id).status == "running")
        cancelled = await service.cancel_execution(ALICE, second.execution_id, cleanup=False)
        assert cancelled.status == "cancelled"
        (tmp_path / "release").touch()
        await wait_for(lambda: store.get_execution(third.execution_id).status == "succeeded")
        assert store.get_execution(second.execution_id).started_at is None
        types = [e.type for e in store.list_events(second.execution_id, limit=50)]
        assert types == ["execution.created", "lock.queued", "execution.cancelled", "lock.released"]

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
from opsgate.spec.issues import has_errors
from opsgate.spec.policies import PolicySet, parse_policy_file
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
- name: batch
  version: "1"
  steps:
    - {id: work, action: scripted, with: {block_file: "BLOCK"}}
- name: provision
  version: "1"
  parameters:
    host: {type: string, required: true}
  concurrency: {locks: ["host:{{ params.host }}"], on_conflict: reject}
  steps:
    - {id: work, action: scripted, with: {block_file: "BLOCK"}}
- name: fragile
  version: "1"
  parameters:
    host: {type: string, required: true}
  concurrency: {locks: ["host:{{ params.host }}"]}
  steps:
    - {id: work, action: scripted, with: {outcomes: [{fail: "disk full"}]}}
"""
#: Two executions of batch at once; the others (which lock their host too) one at a time.
LIMITS = """
rules:
  - id: two-batches
    match: "blueprint.name == 'batch'"
    effect: limit
    limits: {max_concurrent: 2}
  - id: one-deploy
    match: "blueprint.name in ['deploy', 'provision', 'fragile']"
    effect: limit
    limits: {max_concurrent: 1}
"""


@asynccontextmanager
async def running(
    database_url: str, tmp_path: Path, policies: PolicySet | None = None
) -> AsyncIterator[tuple[Service, SQLStore]]:
    block = tmp_path / "release"
    documents = YAML(typ="safe").load(BLUEPRINTS.replace("BLOCK", str(block)))
    specs = [load_spec(document) for document in documents]
    store = SQLStore.open(database_url, clock=utc_now)
    store.migrate()
    catalog = Catalog(blueprints={s.name: s for s in specs}, policies=policies or PolicySet())
    worker = Worker(store, REGISTRY, lease_seconds=5, policies=catalog.policies)
    service = Service(store, catalog, wake=worker.wake)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            yield service, store
            group.cancel_scope.cancel()
    finally:
        store.close()  # also when the test failed: no connection is left for a later test


async def wait_for(predicate: Any) -> None:
    """Poll the database (the worker writes from its threads; no event bus to await yet)."""
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def wait_let_go(store: SQLStore, execution_id: str, status: str) -> None:
    """Until the execution ended as ``status`` and its worker let go: its locks are released
    after the terminal transition, then its lease, so a new lock-taker must wait for this."""

    def let_go() -> bool:
        execution = store.get_execution(execution_id)
        return execution.status == status and execution.lease_owner is None

    await wait_for(let_go)


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
        view = await service.get_workflow_status(second.execution_id)
        assert view.current_sub_task == "waiting for lock host:web-1, held by others"
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
        await wait_let_go(store, first.execution_id, "succeeded")
        again = await service.execute_workflow(ALICE, "exclusive", {})
        await wait_for(lambda: store.get_execution(again.execution_id).status == "succeeded")


async def test_an_execution_is_created_with_its_locks_in_one_transaction(
    database_url: str, tmp_path: Path
) -> None:
    """Not locked in a later call: a worker could claim, run and end the execution in between,
    and a lock taken after its end would never be released (seen in the suite)."""
    async with running(database_url, tmp_path) as (service, store):
        first = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        second = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        for started, locked in ((first, "lock.acquired"), (second, "lock.queued")):
            created, lock = store.list_events(started.execution_id, limit=2)
            assert (created.type, lock.type) == ("execution.created", locked)
            assert lock.occurred_at == created.occurred_at  # the same transaction's time
        (tmp_path / "release").touch()
        await wait_for(lambda: store.get_execution(second.execution_id).status == "succeeded")


async def test_status_and_events_read_models(database_url: str, tmp_path: Path) -> None:
    async with running(database_url, tmp_path) as (service, store):
        (tmp_path / "release").touch()
        started = await service.execute_workflow(ALICE, "deploy", {"host": "web-1"})
        await wait_let_go(store, started.execution_id, "succeeded")
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


def limits() -> PolicySet:
    parsed, issues = parse_policy_file(LIMITS, "limits.yaml")
    assert not has_errors(issues), issues
    return PolicySet(parsed.rules)


async def test_a_policy_max_concurrent_queues_executions_beyond_its_places(
    database_url: str, tmp_path: Path
) -> None:
    async with running(database_url, tmp_path, limits()) as (service, store):
        started = [await service.execute_workflow(ALICE, "batch", {}) for _ in range(3)]
        ids = [s.execution_id for s in started]

        def with_status(status: str) -> list[str]:
            return [i for i in ids if store.get_execution(i).status == status]

        def queued() -> list[str]:
            return [i for i in ids if "lock.queued" in (e.type for e in store.list_events(i))]

        # Decided once the third asked for a place: two run, and it waits (as a row).
        await wait_for(lambda: len(with_status("running")) == 2 and len(queued()) == 1)
        [waiting] = queued()  # whichever of the three asked for a place last
        assert with_status("pending") == [waiting]
        assert [e.type for e in store.list_events(waiting, limit=10)] == [
            "execution.created",
            "lock.queued",
        ]
        (tmp_path / "release").touch()
        await wait_for(lambda: len(with_status("succeeded")) == 3)
        waited_until = store.get_execution(waiting).started_at
        ends = [store.get_execution(i).finished_at for i in ids if i != waiting]
        assert waited_until is not None and None not in ends
        assert waited_until >= min(end for end in ends if end is not None)
        acquired = [e for e in store.list_events(waiting, limit=50) if e.type == "lock.acquired"]
        assert [e.data.get("key") for e in acquired] == ["policy:max_concurrent:batch"]


async def test_an_execution_takes_its_policy_place_only_once_it_holds_its_locks(
    database_url: str, tmp_path: Path
) -> None:
    """A place is never held while a lock is waited for: the lock's holder could be waiting
    for the place (a deadlock). Created straight in the store, as a scheduled fire is, so that
    the worker takes the blueprint's locks itself (the service takes them at creation)."""
    async with running(database_url, tmp_path, limits()) as (service, store):
        spec = service.catalog.blueprints["deploy"]
        content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        digest = store.save_snapshot(spec.name, spec.version, content).digest
        ids = [
            store.create_execution(
                workflow_name="deploy",
                blueprint_digest=digest,
                parameters={"host": "web-1", "replicas": 2},
                requested_by="alice",
            )[0].id
            for _ in range(2)
        ]
        service.wake()

        def locks(execution_id: str) -> list[tuple[str, Any]]:
            return [
                (str(e.type), e.data.get("key"))
                for e in store.list_events(execution_id, limit=50)
                if e.type.startswith("lock.")
            ]

        def running_one() -> list[str]:
            return [i for i in ids if store.get_execution(i).status == "running"]

        # Decided once the other one queued for the host: a place, if it took one, came before.
        await wait_for(
            lambda: (
                len(running_one()) == 1
                and any(("lock.queued", "host:web-1") in locks(i) for i in ids)
            )
        )
        [holder] = running_one()
        [waiting] = [i for i in ids if i != holder]
        place = "policy:max_concurrent:deploy"
        assert locks(holder) == [("lock.acquired", "host:web-1"), ("lock.acquired", place)]
        assert locks(waiting) == [("lock.queued", "host:web-1")]  # and no place meanwhile
        (tmp_path / "release").touch()
        await wait_for(lambda: store.get_execution(waiting).status == "succeeded")
        taken = [key for kind, key in locks(waiting) if kind == "lock.acquired"]
        assert taken == ["host:web-1", place]  # the host (promoted) first, then the place


async def test_on_conflict_reject_waits_for_a_policy_place_and_refuses_only_its_own_locks(
    database_url: str, tmp_path: Path
) -> None:
    """A policy's place is waited for even under ``on_conflict: reject`` (seen in CI: the
    service refused an execution whose worker had already queued for the place)."""
    async with running(database_url, tmp_path, limits()) as (service, store):
        first = await service.execute_workflow(ALICE, "provision", {"host": "web-1"})
        await wait_for(lambda: store.get_execution(first.execution_id).status == "running")
        other = await service.execute_workflow(ALICE, "provision", {"host": "web-2"})
        assert other.status == "pending"
        with pytest.raises(ConflictError, match=r"locks host:web-1 are held by other executions"):
            await service.execute_workflow(ALICE, "provision", {"host": "web-1"})

        def queued_for_place() -> bool:
            events = store.list_events(other.execution_id, limit=50)
            return ("lock.queued", "policy:max_concurrent:provision") in (
                (e.type, e.data.get("key")) for e in events
            )

        await wait_for(queued_for_place)
        assert store.get_execution(other.execution_id).status == "pending"
        (tmp_path / "release").touch()
        await wait_for(lambda: store.get_execution(other.execution_id).status == "succeeded")
        assert store.get_execution(first.execution_id).status == "succeeded"


async def test_a_failed_execution_runs_again_only_once_it_holds_its_locks_again(
    database_url: str, tmp_path: Path
) -> None:
    """Failed, it gave its locks up and another execution may hold them now: retry_step takes
    them back (and its policy place) with the rerun, or refuses and changes nothing."""
    async with running(database_url, tmp_path, limits()) as (service, store):
        failing = await service.execute_workflow(ALICE, "fragile", {"host": "web-1"})
        await wait_let_go(store, failing.execution_id, "failed")
        holder = await service.execute_workflow(BOB, "deploy", {"host": "web-1"})
        await wait_for(lambda: store.get_execution(holder.execution_id).status == "running")
        before = store.list_events(failing.execution_id, limit=100)
        with pytest.raises(ConflictError, match=r"host:web-1 .*held by other executions"):
            await service.retry_step(ALICE, failing.execution_id, "work")
        assert store.list_events(failing.execution_id, limit=100) == before
        assert store.get_execution(failing.execution_id).status == "failed"

        (tmp_path / "release").touch()
        await wait_let_go(store, holder.execution_id, "succeeded")
        rerun = await service.retry_step(ALICE, failing.execution_id, "work")
        assert rerun.status == "running"
        await wait_let_go(store, failing.execution_id, "failed")
        events = store.list_events(failing.execution_id, limit=100)[len(before) :]
        locks = [(e.type, e.data.get("key")) for e in events if e.type.startswith("lock.")]
        place = "policy:max_concurrent:fragile"
        assert locks == [
            ("lock.acquired", "host:web-1"),
            ("lock.acquired", place),
            ("lock.released", "host:web-1"),
            ("lock.released", place),
        ]
        assert [e.type for e in events].index("execution.rerun") < [e.type for e in events].index(
            "lock.acquired"
        )

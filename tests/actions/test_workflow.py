"""The ``workflow`` action: a child execution through the real service and worker, on both
databases: the child runs as the parent's requester, its outcome and outputs are the step's,
and a cancel of the parent cancels the child."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
from ruamel.yaml import YAML

from opsgate.catalog import Catalog
from opsgate.children import ServiceChildren
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.stores.sql import utc_now
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY, load_spec

pytestmark = pytest.mark.anyio
ALICE = Principal("alice")

BLUEPRINTS = """
- name: child
  version: "1"
  parameters:
    fail: {type: boolean, default: false}
    block: {type: string, default: ""}
  steps:
    - id: work
      action: scripted
      with:
        block_file: "{{ params.block or none }}"
        outcomes: [{succeed: {built: yes}}]
      when: "not params.fail"
    - id: check
      action: assert
      depends_on: [work]
      with: {condition: "not params.fail", message: the child was told to fail}
- name: parent
  version: "1"
  parameters:
    fail: {type: boolean, default: false}
    block: {type: string, default: ""}
  steps:
    - id: build
      action: workflow
      retry: {max_attempts: 3, initial_interval: 10ms}
      with:
        workflow_name: child
        parameters: {fail: "{{ params.fail }}", block: "{{ params.block }}"}
    - id: after
      action: log
      depends_on: [build]
      with: {message: "child {{ steps.build.outputs.execution_id }} built"}
- name: keeper
  version: "1"
  parameters:
    token: {type: string, secret: true, required: true}
  steps:
    - id: use
      action: shell
      with:
        command: 'test "$TOKEN" = handed-over-Xy7'
        env: {TOKEN: "{{ params.token }}"}
- name: handover
  version: "1"
  parameters:
    token: {type: string, secret: true, required: true}
    wrapped: {type: boolean, default: false}
  steps:
    - id: hand
      action: workflow
      with:
        workflow_name: keeper
        parameters:
          token: "{{ ('Bearer ' ~ params.token) if params.wrapped else params.token }}"
- name: impatient
  version: "1"
  parameters:
    block: {type: string, required: true}
  steps:
    - id: build
      action: workflow
      timeout: 300ms
      with: {workflow_name: child, parameters: {block: "{{ params.block }}"}}
"""


@asynccontextmanager
async def serving(database_url: str) -> AsyncIterator[tuple[Service, SQLStore]]:
    specs = [load_spec(document) for document in YAML(typ="safe").load(BLUEPRINTS)]
    store = SQLStore.open(database_url, clock=utc_now)
    store.migrate()
    worker = Worker(store, REGISTRY, lease_seconds=5)
    service = Service(store, Catalog(blueprints={s.name: s for s in specs}), wake=worker.wake)
    worker.children = partial(ServiceChildren, service)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            yield service, store
            group.cancel_scope.cancel()
    finally:
        store.close()  # also when the test failed: no connection is left for a later test


async def until_ended(store: SQLStore, execution_id: str) -> str:
    with anyio.fail_after(20):
        while True:
            status = str(store.get_execution(execution_id).status)
            if status in ("succeeded", "failed", "cancelled", "rolled_back", "rollback_failed"):
                return status
            await anyio.sleep(0.05)


async def test_the_child_outcome_and_outputs_are_the_steps(database_url: str) -> None:
    async with serving(database_url) as (service, store):
        started = await service.execute_workflow(ALICE, "parent", {})
        assert await until_ended(store, started.execution_id) == "succeeded"
        [build] = [r for r in store.list_step_runs(started.execution_id) if r.step_id == "build"]
        outputs = build.outputs or {}
        child = store.get_execution(outputs["execution_id"])
        assert (child.workflow_name, child.status, child.requested_by) == (
            "child",
            "succeeded",
            "alice",
        )
        assert outputs["outputs"]["work"] == {"built": "yes"}


async def test_a_failed_child_fails_the_step_at_once(database_url: str) -> None:
    async with serving(database_url) as (service, store):
        started = await service.execute_workflow(ALICE, "parent", {"fail": True})
        assert await until_ended(store, started.execution_id) == "failed"
        [build] = [r for r in store.list_step_runs(started.execution_id) if r.step_id == "build"]
        assert build.attempt == 1  # the child had its own retries: its failure is final
        assert "ended failed: step 'check' failed: the child was told to fail" in str(build.error)
        children = store.list_executions(workflow_name="child").items
        assert [c.status for c in children] == ["failed"]


async def test_cancelling_the_parent_cancels_the_child(database_url: str, tmp_path: Path) -> None:
    block = tmp_path / "release"
    async with serving(database_url) as (service, store):
        started = await service.execute_workflow(ALICE, "parent", {"block": str(block)})
        with anyio.fail_after(20):
            while not store.list_executions(workflow_name="child").items:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        [child] = store.list_executions(workflow_name="child").items
        await service.cancel_execution(ALICE, started.execution_id, cleanup=False)
        assert await until_ended(store, started.execution_id) == "cancelled"
        assert await until_ended(store, child.id) in ("cancelled", "rolled_back")


async def test_a_step_timeout_cancels_the_child(database_url: str, tmp_path: Path) -> None:
    block = tmp_path / "release"  # never created: the child would wait forever
    async with serving(database_url) as (service, store):
        started = await service.execute_workflow(ALICE, "impatient", {"block": str(block)})
        assert await until_ended(store, started.execution_id) == "failed"
        [build] = store.list_step_runs(started.execution_id)
        assert build.status == "timed_out"
        [child] = store.list_executions(workflow_name="child").items
        assert await until_ended(store, child.id) in ("cancelled", "rolled_back")


async def test_a_secret_parameter_reaches_the_child_as_its_reference(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDED_TOKEN", "handed-over-Xy7")
    async with serving(database_url) as (service, store):
        started = await service.execute_workflow(ALICE, "handover", {"token": "env:HANDED_TOKEN"})
        assert await until_ended(store, started.execution_id) == "succeeded"
        [child] = store.list_executions(workflow_name="keeper").items
        assert child.parameters == {"token": "env:HANDED_TOKEN"}  # the reference, not the value

        wrapped = await service.execute_workflow(
            ALICE, "handover", {"token": "env:HANDED_TOKEN", "wrapped": True}
        )
        assert await until_ended(store, wrapped.execution_id) == "failed"
        [hand] = store.list_step_runs(wrapped.execution_id)
        assert "handed to a child workflow only whole" in str(hand.error)

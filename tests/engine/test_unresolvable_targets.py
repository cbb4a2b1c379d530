"""An execution whose targets cannot be resolved any more fails once, with a clear error,
instead of crashing its runner and being claimed again and again."""

from __future__ import annotations

import anyio
import pytest

from opsgate.inventory import Inventory, Target
from opsgate.stores import SQLStore
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY, load_spec

pytestmark = pytest.mark.anyio


async def test_unresolvable_targets_fail_the_execution_once(store: SQLStore) -> None:
    spec = load_spec(
        {
            "name": "fleet",
            "version": "1",
            "targets": "group:web",
            "steps": [{"id": "a", "action": "log", "with": {"message": "hi"}}],
        }
    )
    content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    snapshot = store.save_snapshot(spec.name, spec.version, content)
    execution, _ = store.create_execution(
        workflow_name="fleet",
        blueprint_digest=snapshot.digest,
        parameters={},
        requested_by="alice",
    )
    # The inventory lost its web hosts after the execution was created.
    inventory = Inventory({"db-1": Target(address="127.0.0.1", groups=("db",))})
    worker = Worker(store, REGISTRY, targets=inventory.for_workflow)
    with anyio.fail_after(10):
        await worker.run(until_idle=True)
    failed = store.get_execution(execution.id)
    assert failed.status == "failed" and failed.lease_owner is None
    assert failed.error is not None and failed.error["type"] == "TargetsUnresolvable"
    assert "group 'web' not found" in failed.error["message"]
    assert store.list_step_runs(execution.id) == []

"""Child executions for the ``workflow`` action, started through the service.

The worker knows no service (it sits below it); the runtime hands it a factory of these, one
per parent execution, so a child goes through the same checks as any execution: parameters,
policies for the parent's requester, snapshot, locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from opsgate.actions.base import ChildStatus
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.errors import ConflictError, InvalidTransitionError
from opsgate.models import Execution
from opsgate.service import Principal, Service


class ServiceChildren:
    """Starts, follows and cancels the children of one parent execution."""

    def __init__(self, service: Service, parent: Execution) -> None:
        self.service = service
        requester = parent.requested_by
        self.principal = Principal(requester, service.catalog.roles.roles_of(requester))

    async def start(self, workflow_name: str, parameters: Mapping[str, Any], key: str) -> str:
        started = await self.service.execute_workflow(
            self.principal, workflow_name, parameters, idempotency_key=key
        )
        return started.execution_id

    async def status(self, execution_id: str) -> ChildStatus:
        store = self.service.store
        execution = await anyio.to_thread.run_sync(store.get_execution, execution_id)
        finished = execution.status in EXECUTION_TERMINAL
        outputs: dict[str, Any] = {}
        if finished:
            runs = await anyio.to_thread.run_sync(store.list_step_runs, execution_id)
            outputs = {run.step_id: dict(run.outputs or {}) for run in runs if run.outputs}
        return ChildStatus(str(execution.status), finished, execution.error, outputs)

    async def cancel(self, execution_id: str, reason: str) -> None:
        try:
            await self.service.cancel_execution(self.principal, execution_id, reason=reason)
        except (ConflictError, InvalidTransitionError):
            pass  # it ended meanwhile: nothing left to cancel

"""Small builders for store tests: records in a given state with the fewest words."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from opsgate.engine.statuses import ExecutionStatus, Trigger
from opsgate.models import (
    Approval,
    Approvers,
    Execution,
    MisfirePolicy,
    OnTimeout,
    OverlapPolicy,
    Schedule,
)
from opsgate.stores import SQLStore

BLUEPRINT = {"name": "restart_service", "version": "1.2.0", "steps": [{"id": "check"}]}


def new_execution(
    store: SQLStore,
    *,
    workflow_name: str = "restart_service",
    requested_by: str = "alice",
    parameters: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    deadline_at: datetime | None = None,
    locks: Sequence[tuple[str, int]] = (),
    refuse_queued: bool = False,
) -> Execution:
    snapshot = store.save_snapshot(workflow_name, "1.2.0", {**BLUEPRINT, "name": workflow_name})
    execution, _created = store.create_execution(
        workflow_name=workflow_name,
        blueprint_digest=snapshot.digest,
        parameters={"service": "nginx"} if parameters is None else parameters,
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        deadline_at=deadline_at,
        locks=locks,
        refuse_queued=refuse_queued,
    )
    return execution


def running_execution(store: SQLStore, **options: Any) -> Execution:
    execution = new_execution(store, **options)
    running, _event = store.transition_execution(
        execution.id, Trigger.START, expected=ExecutionStatus.PENDING, actor="worker-1"
    )
    return running


_T = Trigger
#: A way from pending to each status, through the transition table.
PATHS: dict[ExecutionStatus, list[Trigger]] = {
    ExecutionStatus.PENDING: [],
    ExecutionStatus.RUNNING: [_T.START],
    ExecutionStatus.WAITING_APPROVAL: [_T.START, _T.REQUEST_APPROVAL],
    ExecutionStatus.PAUSED: [_T.START, _T.PAUSE],
    ExecutionStatus.SUCCEEDED: [_T.START, _T.SUCCEED],
    ExecutionStatus.FAILED: [_T.START, _T.FAIL],
    ExecutionStatus.CANCELLED: [_T.CANCEL],
    ExecutionStatus.ROLLING_BACK: [_T.START, _T.FAIL, _T.BEGIN_ROLLBACK],
    ExecutionStatus.ROLLED_BACK: [_T.START, _T.FAIL, _T.BEGIN_ROLLBACK, _T.FINISH_ROLLBACK],
    ExecutionStatus.ROLLBACK_FAILED: [_T.START, _T.FAIL, _T.BEGIN_ROLLBACK, _T.FAIL_ROLLBACK],
}


def execution_in(
    store: SQLStore,
    status: ExecutionStatus,
    *,
    between: Callable[[], object] = lambda: None,
    **options: Any,
) -> Execution:
    """An execution brought to ``status`` by transitions; ``between`` runs after each one."""
    execution = new_execution(store, **options)
    for trigger in PATHS[status]:
        between()
        execution, _event = store.transition_execution(
            execution.id, trigger, expected=execution.status, actor="worker-1"
        )
    assert execution.status is status
    return execution


def new_approval(store: SQLStore, execution: Execution, **overrides: Any) -> Approval:
    options: dict[str, Any] = {
        "execution_id": execution.id,
        "step_id": "restart",
        "digest": "d" * 64,
        "approvers": Approvers(roles=("ops-manager",)),
        "quorum": 1,
        "allow_self_approval": False,
        "requested_by": execution.requested_by,
        "on_timeout": OnTimeout.REJECT,
        "actor": "worker-1",
    }
    approval, _event = store.create_approval(**{**options, **overrides})
    return approval


def new_schedule(store: SQLStore, **overrides: Any) -> Schedule:
    options: dict[str, Any] = {
        "workflow_name": "restart_service",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "parameters": {"service": "nginx"},
        "owner": "alice",
        "overlap_policy": OverlapPolicy.SKIP,
        "misfire_policy": MisfirePolicy.RUN_ONCE,
        "catchup_window_seconds": 3600,
        "next_fire_at": None,
    }
    return store.create_schedule(**{**options, **overrides})

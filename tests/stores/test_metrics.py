"""Workflow metrics on a small data set built by hand, with exact expected numbers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from opsgate.engine.statuses import ApprovalStatus, ExecutionStatus, Trigger
from opsgate.models import Execution, WorkflowMetrics
from opsgate.stores import SQLStore
from tests.clocks import FakeClock
from tests.stores.builders import PATHS, execution_in, new_approval, new_execution

RESTART, REBOOT = "restart_service", "reboot_host"


def _ended(
    store: SQLStore, clock: FakeClock, status: ExecutionStatus, seconds: int, workflow: str
) -> Execution:
    """An execution whose last transition (to ``status``) comes ``seconds`` after the others."""
    execution = new_execution(store, workflow_name=workflow)
    triggers = PATHS[status]
    for index, trigger in enumerate(triggers):
        if index == len(triggers) - 1:
            clock.advance(timedelta(seconds=seconds))
        execution, _ = store.transition_execution(
            execution.id, trigger, expected=execution.status, actor="worker-1"
        )
    return execution


def _decided(
    store: SQLStore, clock: FakeClock, execution: Execution, trigger: Trigger, seconds: int
) -> None:
    approval = new_approval(store, execution)
    clock.advance(timedelta(seconds=seconds))
    if trigger is not Trigger.REQUEST_APPROVAL:
        store.transition_approval(
            approval.id, trigger, expected=ApprovalStatus.PENDING, actor="bob"
        )


@pytest.fixture
def since(store: SQLStore, clock: FakeClock) -> datetime:
    """The data set; returns the instant from which only its newer part was created."""
    clock.step = timedelta(0)
    succeeded = _ended(store, clock, ExecutionStatus.SUCCEEDED, 10, RESTART)
    _ended(store, clock, ExecutionStatus.SUCCEEDED, 20, RESTART)
    failed = _ended(store, clock, ExecutionStatus.FAILED, 40, RESTART)
    _ended(store, clock, ExecutionStatus.ROLLED_BACK, 70, RESTART)
    _ended(store, clock, ExecutionStatus.ROLLBACK_FAILED, 100, RESTART)
    cancelled = execution_in(store, ExecutionStatus.CANCELLED, workflow_name=RESTART)
    running = execution_in(store, ExecutionStatus.RUNNING, workflow_name=RESTART)
    _decided(store, clock, succeeded, Trigger.APPROVE, 60)
    _decided(store, clock, failed, Trigger.REJECT, 120)
    _decided(store, clock, running, Trigger.APPROVE, 30)
    _decided(store, clock, cancelled, Trigger.EXPIRE, 500)  # no decision: not a wait for one
    _decided(store, clock, running, Trigger.REQUEST_APPROVAL, 1000)  # still pending
    clock.advance(timedelta(hours=1))
    newer = clock.now
    waiting = execution_in(store, ExecutionStatus.PENDING, workflow_name=RESTART)
    _decided(store, clock, waiting, Trigger.APPROVE, 7)
    _ended(store, clock, ExecutionStatus.SUCCEEDED, 5, REBOOT)
    execution_in(store, ExecutionStatus.PENDING, workflow_name=REBOOT)
    return newer


def test_metrics_count_rate_and_time_every_workflows_executions(
    store: SQLStore, since: datetime
) -> None:
    reboot, restart = store.workflow_metrics()  # by name
    assert restart == WorkflowMetrics(
        workflow_name=RESTART,
        total=8,
        active=2,
        succeeded=2,
        failed=1,
        cancelled=1,
        rolled_back=1,
        rollback_failed=1,
        success_rate=pytest.approx(2 / 6),
        duration_p50_seconds=40.0,
        duration_p95_seconds=pytest.approx(94.0),  # 70 + 0.8 * (100 - 70)
        approval_wait_p50_seconds=45.0,  # of 7, 30, 60 and 120 s: halfway from 30 to 60
    )
    assert reboot == WorkflowMetrics(
        workflow_name=REBOOT,
        total=2,
        active=1,
        succeeded=1,
        failed=0,
        cancelled=0,
        rolled_back=0,
        rollback_failed=0,
        success_rate=1.0,
        duration_p50_seconds=5.0,
        duration_p95_seconds=5.0,
        approval_wait_p50_seconds=None,
    )


def test_metrics_of_one_workflow_since_an_instant(store: SQLStore, since: datetime) -> None:
    [restart] = store.workflow_metrics(RESTART, since=since)
    assert restart == WorkflowMetrics(
        workflow_name=RESTART,
        total=1,
        active=1,
        succeeded=0,
        failed=0,
        cancelled=0,
        rolled_back=0,
        rollback_failed=0,
        success_rate=None,
        duration_p50_seconds=None,
        duration_p95_seconds=None,
        approval_wait_p50_seconds=7.0,
    )
    assert [m.workflow_name for m in store.workflow_metrics(since=since)] == [REBOOT, RESTART]
    assert store.workflow_metrics(since=since + timedelta(days=1)) == []


def test_a_named_workflow_without_executions_has_metrics_of_zeros(store: SQLStore) -> None:
    assert store.workflow_metrics("patch_kernel") == [
        WorkflowMetrics(
            workflow_name="patch_kernel",
            total=0,
            active=0,
            succeeded=0,
            failed=0,
            cancelled=0,
            rolled_back=0,
            rollback_failed=0,
            success_rate=None,
            duration_p50_seconds=None,
            duration_p95_seconds=None,
            approval_wait_p50_seconds=None,
        )
    ]

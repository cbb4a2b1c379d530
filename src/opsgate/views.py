"""Read models: the shapes the front ends return (MCP structured results, CLI output).

Pydantic models, so the MCP server can publish them as output schemas; built from domain records
by the service, never by the front ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class View(BaseModel):
    """Base of every read model: immutable, documented fields."""

    model_config = {"frozen": True}


class StepRunView(View):
    """One run of a step: the step itself, or one fan-out item."""

    item_key: str = Field(description="the fan-out item ('' for a step without for_each)")
    target: str | None = Field(default=None, description="the inventory target, if any")
    status: str = Field(description="pending, running, retrying, succeeded, failed, ...")
    attempts: int = Field(description="attempts started so far")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = Field(default=None, description="first start to end")
    next_attempt_at: datetime | None = Field(default=None, description="when a retry is due")
    error: dict[str, Any] | None = Field(default=None, description="the last attempt's error")


class StepView(View):
    """One step of the blueprint and how its runs stand."""

    step_id: str
    name: str
    action: str
    status: str = Field(description="pending until it has runs; then from its runs")
    attempts: int = Field(description="attempts over all its runs")
    runs: list[StepRunView] = Field(default_factory=list)


class ExecutionStatusView(View):
    """Where an execution stands: the contract of ``get_workflow_status``."""

    execution_id: str
    workflow_name: str
    status: str
    progress: float = Field(description="percentage of the work done")
    current_step: str | None = Field(description="a step running now, if any")
    current_steps: list[str] = Field(description="every step running now")
    current_sub_task: str | None = Field(description="what the running action last reported")
    steps_completed: int
    total_steps: int
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error: dict[str, Any] | None
    steps: list[StepView]


class ExecutionSummary(View):
    """One line of ``list_executions``."""

    execution_id: str
    workflow_name: str
    status: str
    requested_by: str
    created_at: datetime
    finished_at: datetime | None


class ExecutionList(View):
    executions: list[ExecutionSummary]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null at the end")


class EventView(View):
    seq: int
    type: str
    occurred_at: datetime
    actor: str
    step_id: str | None = None
    target: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventList(View):
    execution_id: str
    events: list[EventView]
    next_after_seq: int | None = Field(description="pass as after_seq for more; null at the end")


class ExecutionStarted(View):
    """What ``execute_workflow`` returns at once."""

    execution_id: str
    workflow_name: str
    status: str
    created: bool = Field(description="false when an idempotency key returned an earlier run")
    next_step: str = Field(description="what to do next")


class WorkflowMetricsView(View):
    """How one workflow's executions went: counts, success rate, durations, approval waits."""

    workflow_name: str
    total: int
    active: int
    succeeded: int
    failed: int
    cancelled: int
    rolled_back: int
    rollback_failed: int
    success_rate: float | None = Field(description="succeeded / finished; null before any ended")
    duration_p50_seconds: float | None
    duration_p95_seconds: float | None
    approval_wait_p50_seconds: float | None


class MetricsList(View):
    metrics: list[WorkflowMetricsView]

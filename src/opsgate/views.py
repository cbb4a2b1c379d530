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
    current_sub_task: str | None = Field(
        description="what the running action last reported, or the lock a pending run waits for"
    )
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


# ----------------------------------------------------------------- the catalog (blueprints)


class ParameterView(View):
    """One parameter a blueprint takes; a secret's default is never shown."""

    name: str
    type: str = Field(description="string, integer, number, boolean, array or object")
    required: bool
    default: Any = Field(default=None, description="used when no value is given")
    description: str | None = None
    secret: bool = Field(description="give a reference (env:NAME or file:/path), not the value")
    enum: list[Any] | None = Field(default=None, description="the only allowed values")
    min: float | None = None
    max: float | None = None
    pattern: str | None = Field(default=None, description="regular expression a string matches")


class GateView(View):
    """An approval gate on a step: who may decide it, how many, until when."""

    approver_roles: list[str]
    approver_principals: list[str]
    quorum: int
    timeout_seconds: float
    on_timeout: str = Field(description="reject or escalate; never approve")
    allow_self_approval: bool
    confirm: bool = Field(description="the requester confirms it in the chat client")


class StepOutline(View):
    """One step of a blueprint as a caller needs to know it before running it."""

    step_id: str
    name: str
    action: str
    depends_on: list[str]
    when: str | bool | None = Field(default=None, description="condition for running it")
    fans_out: bool = Field(description="runs once per target or item (for_each)")
    approval: GateView | None = Field(default=None, description="its approval gate, if any")
    has_rollback: bool = Field(description="it registers a compensation when it succeeds")


class WorkflowSummary(View):
    """One line of ``list_workflows``."""

    workflow_name: str
    version: str
    title: str | None
    description: str | None
    category: str | None
    risk: str
    tags: list[str]
    parameters: list[str] = Field(description="parameter names; required ones end with '*'")
    steps: int
    approval_steps: list[str] = Field(description="steps that wait for an approval")


class WorkflowList(View):
    workflows: list[WorkflowSummary]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null at the end")


class WorkflowDetails(View):
    """Everything a caller needs to decide how to run a blueprint."""

    workflow_name: str
    version: str
    title: str | None
    description: str | None
    documentation: str | None
    owner: str | None
    category: str | None
    risk: str
    tags: list[str]
    parameters: list[ParameterView]
    targets: str | list[str] | None = Field(description="the inventory selector of its targets")
    steps: list[StepOutline]
    locks: list[str] = Field(description="lock keys (templates) taken while it runs")
    on_lock_conflict: str | None = Field(description="queue or reject, when a lock is held")
    rollback_on_failure: bool
    rollback_actions: list[str] = Field(description="workflow-level rollback actions, in order")
    timeout_seconds: float | None
    next_step: str = Field(description="what to do next")


# --------------------------------------------------------------------- schedules


class FireTimeView(View):
    """One fire time of a schedule, in its timezone and in UTC, with any DST note."""

    at_utc: datetime
    at_local: str = Field(description="ISO 8601 local time with its UTC offset")
    dst: str | None = Field(
        default=None,
        description="shifted, repeated_once, repeated_first, repeated_second, after_gap; "
        "null when DST does not touch this fire",
    )
    note: str | None = Field(default=None, description="the DST note in words")


class ScheduleView(View):
    """A schedule: what it runs, when, what its policies do, and how its last fire went."""

    schedule_id: str
    workflow_name: str
    cron: str
    timezone: str
    parameters: dict[str, Any] = Field(description="secret parameters are references, not values")
    owner: str = Field(description="executions start as this principal; policies judge it")
    enabled: bool = Field(description="false while paused")
    overlap_policy: str
    overlap_policy_explained: str
    misfire_policy: str
    misfire_policy_explained: str
    catchup_window_seconds: int
    misfire_grace_seconds: int
    start_at: datetime | None
    end_at: datetime | None
    next_fire_at: datetime | None = Field(description="null when paused, deleted or ended")
    last_fire_at: datetime | None
    last_outcome: str | None = Field(description="started, skipped, misfired, denied, failed")
    next_fire_times: list[FireTimeView] = Field(
        description="the next fire times, with DST gaps and repeats flagged"
    )
    created: bool = Field(
        default=True, description="false when an idempotency key returned an earlier schedule"
    )
    created_at: datetime
    updated_at: datetime


class ScheduleList(View):
    schedules: list[ScheduleView]


class UpcomingExecution(View):
    """One execution a schedule will start (if the policies then allow it)."""

    schedule_id: str
    workflow_name: str
    timezone: str
    fire: FireTimeView


class UpcomingList(View):
    hours_ahead: float
    executions: list[UpcomingExecution] = Field(description="in time order")
    truncated: bool = Field(description="true when more fall in the period than were listed")


class TargetChoiceView(View):
    """One inventory target: whether a run would address it, and why."""

    name: str
    selected: bool
    reasons: list[str] = Field(description="which selector terms took it in or left it out")
    address: str | None = Field(default=None, description="null without an inventory")
    groups: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class WorkflowTargetsView(View):
    """What ``get_workflow_targets`` returns: a blueprint's targets for given parameters."""

    workflow_name: str
    selector: str | list[str] | None = Field(
        description="the blueprint's targets rendered with the parameters; null if it has none"
    )
    inventory: str | None = Field(
        description="the inventory file; null when none is configured (OPSGATE_INVENTORY), "
        "and then the selector's terms are taken as target names"
    )
    selected: list[str] = Field(description="the targets a run would address, in run order")
    targets: list[TargetChoiceView] = Field(description="every inventory target, in file order")


# ----------------------------------------------------------------- governance


class ViolationView(View):
    """One reason a policy refuses a request, with what would be allowed instead."""

    rule_id: str = Field(description="the policy rule ('defaults' for the default effect)")
    step_id: str | None = Field(default=None, description="the step it refuses, if one")
    reason: str
    missing: list[str] = Field(description="what the request lacks: role, window, targets, ...")
    remedy: str | None = Field(default=None, description="what would be allowed instead")


class PlannedGateView(View):
    """A gate an execution will stop at, from the blueprint or from a policy rule."""

    step_id: str | None = Field(description="the gated step; null: before the first step")
    gate: str = Field(description="'approval' (the blueprint's) or 'policy:<rule id>'")
    rule_id: str | None = None
    reason: str | None = None
    approver_roles: list[str]
    approver_principals: list[str]
    eligible_principals: list[str] = Field(description="known principals who may decide it")
    quorum: int
    timeout_seconds: float
    on_timeout: str = Field(description="reject or escalate; never approve")
    allow_self_approval: bool


class VerdictView(View):
    """The policy verdict for running a blueprint with parameters as the caller."""

    workflow_name: str
    allowed: bool
    effect: str = Field(description="the strongest matching effect: deny, require_approval, ...")
    explanation: str = Field(description="the verdict in one paragraph, naming rules and remedies")
    matched_rules: list[str]
    violations: list[ViolationView]
    gates: list[PlannedGateView]
    limits: dict[str, int] = Field(description="max_targets, max_parallel, max_concurrent caps")


class PlannedStepView(View):
    """One step of a plan: where it stands in the DAG and what it will do."""

    step_id: str
    name: str
    action: str
    level: int = Field(description="DAG level: steps of one level may run in parallel")
    depends_on: list[str]
    when: str | bool | None = None
    fans_out_over: str | None = Field(default=None, description="'targets' or a list, if any")
    arguments: dict[str, Any] | None = Field(
        default=None, description="rendered arguments; null when they need earlier outputs"
    )
    rollback: str | None = Field(default=None, description="the compensation's action, if any")


class PlanView(View):
    """Everything an execution would do, for review before ``execute_workflow``."""

    workflow_name: str
    version: str
    parameters: dict[str, Any] = Field(description="validated values; secrets masked")
    targets: list[str]
    levels: list[list[str]] = Field(description="step ids by DAG level, in order")
    steps: list[PlannedStepView]
    verdict: VerdictView
    locks: list[str]
    rollback_plan: list[str] = Field(description="what is undone on failure, in order")
    mermaid: str = Field(description="the DAG as a Mermaid flowchart")
    plan_digest: str = Field(description="pass to execute_workflow to run exactly this plan")
    next_step: str


class DecisionView(View):
    """One principal's decision on an approval."""

    principal: str
    decision: str
    comment: str | None
    channel: str
    decided_at: datetime


class ApprovalView(View):
    """An approval request: which gate of which step, who may decide, and where it stands."""

    approval_id: str
    execution_id: str
    workflow_name: str
    step_id: str = Field(description="the gated step, or '@execution' for the whole execution")
    gate: str
    confirm: bool = Field(
        description="a confirmation: the requester confirms it in their client (approve_step "
        "asks by elicitation), or an approver decides it"
    )
    status: str = Field(description="pending, granted, rejected, expired, escalated, ...")
    requested_by: str
    approver_roles: list[str]
    approver_principals: list[str]
    quorum: int
    approvals_so_far: int
    deadline_at: datetime | None
    on_timeout: str
    response_schema: dict[str, Any] | None = None
    created_at: datetime
    decisions: list[DecisionView]
    next_step: str


class ApprovalList(View):
    """Approvals the caller may decide, oldest first."""

    approvals: list[ApprovalView]

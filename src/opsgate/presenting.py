"""Read models built from domain records: execution status, the catalog, targets, schedules.

Pure functions: the service fetches, these shape what the front ends return.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from opsgate.engine.conductor import Conductor, ExecutionFacts, progress
from opsgate.engine.statuses import ApprovalStatus, ExecutionStatus
from opsgate.inventory import Inventory, selector_terms, workflow_selector
from opsgate.models import (
    Approval,
    ApprovalDecisionKind,
    Execution,
    Schedule,
    StepRun,
)
from opsgate.schedules.cron import CronError, CronSchedule, Fire, parse_cron
from opsgate.schedules.fires import OVERLAP_WORDS, following, misfire_words
from opsgate.spec.model import ParameterSpec, StepSpec, WorkflowSpec
from opsgate.views import (
    ApprovalView,
    DecisionView,
    ExecutionStatusView,
    FireTimeView,
    GateView,
    ParameterView,
    ScheduleView,
    StepOutline,
    StepRunView,
    StepView,
    TargetChoiceView,
    UpcomingExecution,
    WorkflowDetails,
    WorkflowSummary,
    WorkflowTargetsView,
)

#: The smallest step of time: a fire at exactly ``t`` is the next one after ``t - _TICK``.
_TICK = timedelta(microseconds=1)


def targets_view(
    spec: WorkflowSpec, values: Mapping[str, Any], inventory: Inventory | None
) -> WorkflowTargetsView:
    """The ``get_workflow_targets`` shape: the rendered selector and each target's choice."""
    selector = workflow_selector(spec, values)
    if inventory is None:
        names = [] if selector is None else selector_terms(selector)
        reason = "named by the selector (no inventory is configured: OPSGATE_INVENTORY)"
        choices = [TargetChoiceView(name=name, selected=True, reasons=[reason]) for name in names]
        return WorkflowTargetsView(
            workflow_name=spec.name,
            selector=selector,
            inventory=None,
            selected=names,
            targets=choices,
        )
    explained = inventory.explain(selector) if selector is not None else []
    targets = [
        TargetChoiceView(
            name=choice.name,
            selected=choice.selected,
            reasons=list(choice.reasons),
            address=inventory.targets[choice.name].address,
            groups=list(inventory.targets[choice.name].groups),
            labels=dict(inventory.targets[choice.name].labels),
        )
        for choice in explained
    ]
    selected = [] if selector is None else [t["name"] for t in inventory.select(selector)]
    return WorkflowTargetsView(
        workflow_name=spec.name,
        selector=selector,
        inventory=inventory.source,
        selected=selected,
        targets=targets,
    )


def status_view(
    spec: WorkflowSpec, execution: Execution, runs: list[StepRun]
) -> ExecutionStatusView:
    """The ``get_workflow_status`` shape from the records."""
    conductor = Conductor(
        spec,
        ExecutionFacts(
            execution.id, execution.workflow_name, execution.requested_by, execution.parameters
        ),
    )
    views = conductor.views(runs)
    steps = []
    for step in spec.steps:
        view = views[step.id]
        step_runs = [_run_view(run) for run in view.runs]
        if not view.runs:
            status = "pending"
        elif len(view.runs) == 1:
            status = str(view.runs[0].status)
        else:
            status = str(view.phase)
        steps.append(
            StepView(
                step_id=step.id,
                name=step.name or step.id,
                action=step.action,
                status=status,
                attempts=sum(run.attempt for run in view.runs),
                runs=step_runs,
            )
        )
    running = [s.step_id for s in steps if any(r.status == "running" for r in s.runs)]
    completed = sum(s.status in ("succeeded", "skipped", "rolled_back") for s in steps)
    done = execution.status is ExecutionStatus.SUCCEEDED
    return ExecutionStatusView(
        execution_id=execution.id,
        workflow_name=execution.workflow_name,
        status=str(execution.status),
        progress=100.0 if done else progress(views),
        current_step=running[0] if running else None,
        current_steps=running,
        current_sub_task=execution.current_sub_task,
        steps_completed=completed,
        total_steps=len(spec.steps),
        requested_by=execution.requested_by,
        created_at=execution.created_at,
        started_at=execution.started_at,
        finished_at=execution.finished_at,
        duration_seconds=_duration(execution.started_at, execution.finished_at),
        error=dict(execution.error) if execution.error else None,
        steps=steps,
    )


def _run_view(run: StepRun) -> StepRunView:
    return StepRunView(
        item_key=run.item_key,
        target=run.target,
        status=str(run.status),
        attempts=run.attempt,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=_duration(run.started_at, run.finished_at),
        next_attempt_at=run.next_attempt_at,
        error=dict(run.error) if run.error else None,
    )


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def encode_name_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(f"after:{name}".encode()).decode()


def decode_name_cursor(cursor: str | None) -> str:
    if cursor is None:
        return ""
    try:
        position = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
        if not position.startswith("after:"):
            raise ValueError("not a position written by list_workflows")
        return position.removeprefix("after:")
    except (ValueError, binascii.Error) as exc:
        # ValueError, like the store's cursors: the front ends report it as a bad argument.
        raise ValueError(
            f"invalid cursor {cursor!r}: pass the next_cursor of the previous page unchanged, "
            "or no cursor for the first page"
        ) from exc


def workflow_summary(spec: WorkflowSpec) -> WorkflowSummary:
    return WorkflowSummary(
        workflow_name=spec.name,
        version=spec.version,
        title=spec.title,
        description=spec.description,
        category=spec.category,
        risk=spec.risk,
        tags=list(spec.tags),
        parameters=[
            name + ("*" if p.required and p.default is None else "")
            for name, p in spec.parameters.items()
        ],
        steps=len(spec.steps),
        approval_steps=[step.id for step in spec.steps if step.approval is not None],
    )


def workflow_details(spec: WorkflowSpec) -> WorkflowDetails:
    concurrency = spec.concurrency
    return WorkflowDetails(
        workflow_name=spec.name,
        version=spec.version,
        title=spec.title,
        description=spec.description,
        documentation=spec.documentation,
        owner=spec.owner,
        category=spec.category,
        risk=spec.risk,
        tags=list(spec.tags),
        parameters=[_parameter_view(name, p) for name, p in spec.parameters.items()],
        targets=list(spec.targets) if isinstance(spec.targets, tuple) else spec.targets,
        steps=[_step_outline(step) for step in spec.steps],
        locks=list(concurrency.locks) if concurrency else [],
        on_lock_conflict=concurrency.on_conflict if concurrency else None,
        rollback_on_failure=spec.rollback_on_failure,
        rollback_actions=[action.id for action in spec.rollback_plan.on_failure],
        timeout_seconds=spec.timeout.total_seconds() if spec.timeout else None,
        next_step=(
            f"call plan_workflow(workflow_name={spec.name!r}, parameters={{...}}) to review "
            "what would run, then execute_workflow"
        ),
    )


def _parameter_view(name: str, spec: ParameterSpec) -> ParameterView:
    return ParameterView(
        name=name,
        type=spec.type,
        required=spec.required and spec.default is None,
        default=None if spec.secret else spec.default,
        description=spec.description,
        secret=spec.secret,
        enum=list(spec.enum) if spec.enum is not None else None,
        min=spec.min,
        max=spec.max,
        pattern=spec.pattern,
    )


def _step_outline(step: StepSpec) -> StepOutline:
    gate = step.approval
    return StepOutline(
        step_id=step.id,
        name=step.name or step.id,
        action=step.action,
        depends_on=list(step.depends_on),
        when=step.when,
        fans_out=step.for_each is not None,
        approval=None
        if gate is None
        else GateView(
            approver_roles=list(gate.approvers.roles),
            approver_principals=list(gate.approvers.principals),
            quorum=gate.quorum,
            timeout_seconds=gate.timeout.total_seconds(),
            on_timeout=gate.on_timeout,
            allow_self_approval=gate.allow_self_approval,
            confirm=gate.confirm,
        ),
        has_rollback=step.rollback is not None,
    )


def fire_time_view(fire: Fire) -> FireTimeView:
    return FireTimeView(
        at_utc=fire.at,
        at_local=fire.local.isoformat(),
        dst=None if fire.dst is None else str(fire.dst),
        note=fire.explain(),
    )


def schedule_view(schedule: Schedule, fire_times: int = 5, *, created: bool = True) -> ScheduleView:
    """The ``schedule_workflow`` shape: the schedule, its next fire times, its policies in words."""
    fires: list[Fire] = []
    if schedule.next_fire_at is not None:
        try:
            cron = parse_cron(schedule.cron, schedule.timezone)
        except CronError:
            cron = None
        if cron is not None:
            start = schedule.next_fire_at - _TICK
            fires = [
                fire
                for fire in cron.fires(start, fire_times)
                if schedule.end_at is None or fire.at <= schedule.end_at
            ]
    return ScheduleView(
        schedule_id=schedule.id,
        workflow_name=schedule.workflow_name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        parameters=dict(schedule.parameters),
        owner=schedule.owner,
        enabled=schedule.enabled,
        overlap_policy=str(schedule.overlap_policy),
        overlap_policy_explained=OVERLAP_WORDS[schedule.overlap_policy],
        misfire_policy=str(schedule.misfire_policy),
        misfire_policy_explained=misfire_words(
            schedule.misfire_policy, schedule.catchup_window_seconds, schedule.misfire_grace_seconds
        ),
        catchup_window_seconds=schedule.catchup_window_seconds,
        misfire_grace_seconds=schedule.misfire_grace_seconds,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
        next_fire_at=schedule.next_fire_at,
        last_fire_at=schedule.last_fire_at,
        last_outcome=None if schedule.last_outcome is None else str(schedule.last_outcome),
        next_fire_times=[fire_time_view(fire) for fire in fires],
        created=created,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def upcoming_fires(
    schedules: Sequence[Schedule], until: datetime, limit: int
) -> tuple[list[UpcomingExecution], bool]:
    """The fires of enabled schedules up to ``until`` in time order, at most ``limit``, and
    whether more were left out: a merge over one heap entry per schedule, so a long list of
    schedules costs one cron step per fire listed, not per schedule and hour."""
    heap: list[tuple[datetime, int, Schedule, CronSchedule]] = []
    for index, schedule in enumerate(schedules):
        if not schedule.enabled or schedule.next_fire_at is None:
            continue
        try:
            cron = parse_cron(schedule.cron, schedule.timezone)
        except CronError:
            continue
        heap.append((schedule.next_fire_at, index, schedule, cron))
    heapq.heapify(heap)
    found: list[UpcomingExecution] = []
    while heap and heap[0][0] <= until:
        if len(found) == limit:
            return found, True
        at, index, schedule, cron = heapq.heappop(heap)
        fire = cron.next_fire(at - _TICK)
        found.append(
            UpcomingExecution(
                schedule_id=schedule.id,
                workflow_name=schedule.workflow_name,
                timezone=schedule.timezone,
                fire=fire_time_view(fire),
            )
        )
        following_at = following(cron, fire.at, schedule.end_at)
        if following_at is not None:
            heapq.heappush(heap, (following_at, index, schedule, cron))
    return found, False


def approval_view(approval: Approval, workflow_name: str, confirm: bool = False) -> ApprovalView:
    approvals_so_far = len(
        {d.principal for d in approval.decisions if d.decision is ApprovalDecisionKind.GRANTED}
    )
    if approval.status is ApprovalStatus.PENDING:
        next_step = (
            f"approve_step(approval_id={approval.id!r}) or reject_step(approval_id="
            f"{approval.id!r}, comment=...); {approval.quorum - approvals_so_far} more "
            "approval(s) needed"
        )
    else:
        next_step = (
            f"get_workflow_status(execution_id={approval.execution_id!r}) to follow the execution"
        )
    return ApprovalView(
        approval_id=approval.id,
        execution_id=approval.execution_id,
        workflow_name=workflow_name,
        step_id=approval.step_id,
        gate=approval.gate,
        confirm=confirm,
        status=str(approval.status),
        requested_by=approval.requested_by,
        approver_roles=list(approval.approvers.roles),
        approver_principals=list(approval.approvers.principals),
        quorum=approval.quorum,
        approvals_so_far=approvals_so_far,
        deadline_at=approval.deadline_at,
        on_timeout=str(approval.on_timeout),
        response_schema=approval.response_schema,
        created_at=approval.created_at,
        decisions=[
            DecisionView(
                principal=d.principal,
                decision=str(d.decision),
                comment=d.comment,
                channel=str(d.channel),
                decided_at=d.decided_at,
            )
            for d in approval.decisions
        ],
        next_step=next_step,
    )

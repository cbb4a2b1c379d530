"""Tools of schedules: schedule_workflow, list_scheduled_workflows, update_schedule,
delete_schedule, get_upcoming_executions. A schedule is owned by its creator: its executions
start as the owner, and only the owner changes or deletes it (the service enforces that)."""

from datetime import datetime
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from opsgate.models import MisfirePolicy, OverlapPolicy
from opsgate.schedules.validation import (
    DEFAULT_CATCHUP_WINDOW_SECONDS,
    DEFAULT_MISFIRE_GRACE_SECONDS,
    MAX_CATCHUP_WINDOW_SECONDS,
)
from opsgate.server.state import AppState, principal_of, state_of
from opsgate.server.tools.common import READ_ONLY, Parameters, WorkflowName, add_tool
from opsgate.service import MAX_UPCOMING_HOURS
from opsgate.views import ScheduleList, ScheduleView, UpcomingList

#: Saving a schedule changes opsgate's state only; its fires act on systems later.
_SAVE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
#: Deleting stops every future run for good; deleting twice is refused, not repeated.
_DELETE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)

ScheduleId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="the schedule id, from schedule_workflow or list_scheduled_workflows",
    ),
]
Cron = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="a 5-field cron expression, minute hour day-of-month month day-of-week "
        "(e.g. '30 2 * * 1-5' for 02:30 on weekdays)",
    ),
]
Timezone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="the IANA timezone the cron expression is read in (e.g. 'Europe/Berlin')",
    ),
]
_OVERLAP = (
    "when a fire comes while the previous run still runs: skip it, queue it, allow both, or "
    "cancel_previous"
)
_MISFIRE = (
    "fires missed while opsgate was down: skip them, run_once for all, or run_all of them "
    "(within catchup_window_seconds)"
)
_CATCHUP = "missed fires older than this many seconds are skipped"
#: A day: a fire later than that is a misfire, whatever the schedule says.
MAX_GRACE_SECONDS = 86400
_GRACE = "a fire this many seconds late still runs as on time"
Moment = Annotated[
    datetime | None,
    Field(description="ISO 8601 date and time with its UTC offset, e.g. 2026-05-01T08:00:00Z"),
]


async def schedule_workflow(
    ctx: Context[AppState],
    workflow_name: WorkflowName,
    cron: Cron,
    timezone: Timezone = "UTC",
    parameters: Parameters = {},  # noqa: B006 (never mutated)
    overlap_policy: Annotated[OverlapPolicy, Field(description=_OVERLAP)] = OverlapPolicy.SKIP,
    misfire_policy: Annotated[MisfirePolicy, Field(description=_MISFIRE)] = MisfirePolicy.RUN_ONCE,
    start_at: Moment = None,
    end_at: Moment = None,
    enabled: Annotated[bool, Field(description="false saves it paused")] = True,
    catchup_window_seconds: Annotated[
        int, Field(ge=0, le=MAX_CATCHUP_WINDOW_SECONDS, description=_CATCHUP)
    ] = DEFAULT_CATCHUP_WINDOW_SECONDS,
    misfire_grace_seconds: Annotated[
        int, Field(ge=1, le=MAX_GRACE_SECONDS, description=_GRACE)
    ] = DEFAULT_MISFIRE_GRACE_SECONDS,
    idempotency_key: Annotated[
        str | None,
        Field(
            max_length=200,
            description="any unique text; calling again with the same key returns the same "
            "schedule instead of creating another",
        ),
    ] = None,
) -> ScheduleView:
    """Run a workflow on a cron schedule, as yourself: every fire starts an execution with these parameters that the policies judge at that moment. Everything is checked at once (cron, timezone, parameters, policies) and nothing is saved unless all is valid. Returns the schedule_id and the next fire times in the schedule's timezone, with DST gaps and repeats flagged, and the overlap and misfire policies explained: show them to the user. Change it with update_schedule, remove it with delete_schedule."""  # noqa: E501
    return await state_of(ctx).service.schedule_workflow(
        principal_of(ctx),
        workflow_name,
        cron,
        timezone,
        parameters,
        overlap_policy=overlap_policy,
        misfire_policy=misfire_policy,
        start_at=start_at,
        end_at=end_at,
        enabled=enabled,
        catchup_window_seconds=catchup_window_seconds,
        misfire_grace_seconds=misfire_grace_seconds,
        idempotency_key=idempotency_key,
    )


async def list_scheduled_workflows(
    ctx: Context[AppState],
    workflow_name: Annotated[
        str | None, Field(max_length=128, description="only schedules of this blueprint")
    ] = None,
    fire_times: Annotated[
        int, Field(ge=0, le=20, description="how many next fire times to show per schedule")
    ] = 3,
) -> ScheduleList:
    """List the schedules (paused ones too), oldest first: the workflow, cron and timezone, owner, parameters, overlap and misfire policies, the next fire times and how the last fire went. Use the schedule_id with update_schedule or delete_schedule; get_upcoming_executions shows all fires in time order."""  # noqa: E501
    return await state_of(ctx).service.list_scheduled_workflows(
        workflow_name, fire_times=fire_times
    )


async def update_schedule(
    ctx: Context[AppState],
    schedule_id: ScheduleId,
    cron: Annotated[str | None, Field(max_length=200, description="a new cron expression")] = None,
    timezone: Annotated[str | None, Field(max_length=64, description="a new timezone")] = None,
    parameters: Annotated[
        dict[str, Any] | None,
        Field(description="new parameter values (all of them: they replace the old ones)"),
    ] = None,
    overlap_policy: Annotated[OverlapPolicy | None, Field(description=_OVERLAP)] = None,
    misfire_policy: Annotated[MisfirePolicy | None, Field(description=_MISFIRE)] = None,
    start_at: Moment = None,
    end_at: Moment = None,
    enabled: Annotated[
        bool | None, Field(description="false pauses it; true resumes it from the next fire")
    ] = None,
    catchup_window_seconds: Annotated[
        int | None, Field(ge=0, le=MAX_CATCHUP_WINDOW_SECONDS, description=_CATCHUP)
    ] = None,
    misfire_grace_seconds: Annotated[
        int | None, Field(ge=1, le=MAX_GRACE_SECONDS, description=_GRACE)
    ] = None,
) -> ScheduleView:
    """Change a schedule you own: only the fields you pass change, and the result is checked as a whole like a new schedule (nothing is saved when anything is invalid). enabled=false pauses it; enabled=true resumes it from the next fire (fires missed while paused are not made up). Returns the schedule with its new next fire times."""  # noqa: E501
    return await state_of(ctx).service.update_schedule(
        principal_of(ctx),
        schedule_id,
        cron=cron,
        timezone=timezone,
        parameters=parameters,
        overlap_policy=overlap_policy,
        misfire_policy=misfire_policy,
        start_at=start_at,
        end_at=end_at,
        enabled=enabled,
        catchup_window_seconds=catchup_window_seconds,
        misfire_grace_seconds=misfire_grace_seconds,
    )


async def delete_schedule(ctx: Context[AppState], schedule_id: ScheduleId) -> ScheduleView:
    """Delete a schedule you own, for good: it never fires again (executions it started keep running, and its history stays in the event log). To stop it for a while instead, call update_schedule with enabled=false. Only on the user's explicit request."""  # noqa: E501
    return await state_of(ctx).service.delete_schedule(principal_of(ctx), schedule_id)


async def get_upcoming_executions(
    ctx: Context[AppState],
    hours_ahead: Annotated[
        float,
        Field(gt=0, le=MAX_UPCOMING_HOURS, description="how far ahead to look, in hours"),
    ] = 24,
    workflow_name: Annotated[
        str | None, Field(max_length=128, description="only schedules of this blueprint")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=1000, description="at most this many fires")] = 100,
) -> UpcomingList:
    """The executions the schedules will start in the next hours_ahead hours, in time order: each fire's time in its schedule's timezone and in UTC, with DST notes. Paused schedules are left out. When truncated is true, more fires fall in the period: ask for fewer hours or raise limit."""  # noqa: E501
    try:
        return await state_of(ctx).service.get_upcoming_executions(
            hours_ahead, workflow_name, limit=limit
        )
    except ValueError as exc:  # bounds the service checks too
        raise ToolError(str(exc)) from exc


def register(server: MCPServer[Any]) -> None:
    add_tool(server, schedule_workflow, title="Schedule a workflow", annotations=_SAVE)
    add_tool(server, list_scheduled_workflows, title="List schedules", annotations=READ_ONLY)
    add_tool(server, update_schedule, title="Change a schedule", annotations=_SAVE)
    add_tool(server, delete_schedule, title="Delete a schedule", annotations=_DELETE)
    add_tool(server, get_upcoming_executions, title="Upcoming executions", annotations=READ_ONLY)

"""The ``opsgate`` command line (typer + rich): thin commands over the library.

User errors (an invalid file, an unreachable database) end in a one-line message on stderr and
a non-zero exit code, never in a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from opsgate import __version__
from opsgate.actions.reference import render_reference, render_summary
from opsgate.actions.registry import ActionRegistry
from opsgate.catalog import FileReport, load_catalog, validate_paths
from opsgate.config import Settings, load_settings
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.errors import OpsgateError
from opsgate.lab import LabState
from opsgate.lab import control as lab_control
from opsgate.models import Channel, MisfirePolicy, OverlapPolicy
from opsgate.runtime import Runtime
from opsgate.schedules.validation import (
    DEFAULT_CATCHUP_WINDOW_SECONDS,
    DEFAULT_MISFIRE_GRACE_SECONDS,
)
from opsgate.server.http import serve_http, serve_stdio
from opsgate.server.logs import configure_logging
from opsgate.server.welcome import welcome as server_welcome
from opsgate.spec.issues import Severity
from opsgate.stores.migrate import upgrade_database
from opsgate.tokens import TokenBook
from opsgate.views import (
    ApprovalList,
    ApprovalView,
    ExecutionStatusView,
    PlanView,
    ScheduleView,
    UpcomingList,
)

app = typer.Typer(
    name="opsgate",
    help="Governed operational workflows for AI assistants: validate, serve, run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
token_app = typer.Typer(help="Bearer tokens of the HTTP transport.", no_args_is_help=True)
app.add_typer(token_app, name="token")
lab_app = typer.Typer(help="The local lab: a small fleet on 127.0.0.1.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BlueprintsOption = Annotated[
    Path | None,
    typer.Option(help="Blueprint directory [default: OPSGATE_BLUEPRINTS or ./blueprints]"),
]
PoliciesOption = Annotated[
    Path | None, typer.Option(help="Policy directory [default: OPSGATE_POLICIES or ./policies]")
]


def _settings(blueprints: Path | None = None, policies: Path | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if blueprints is not None:
        overrides["blueprints"] = blueprints
    if policies is not None:
        overrides["policies"] = policies
    return load_settings(**overrides)


@app.command()
def version() -> None:
    """Print the opsgate version."""
    out.print(__version__)


@app.command()
def actions(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="the full reference, as docs/actions.md")
    ] = False,
) -> None:
    """List every action (built-in and plugins) with the arguments its with: takes."""
    infos = ActionRegistry.load().infos()
    text = render_reference(infos) if markdown else render_summary(infos)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or directories [default: the blueprint and policy dirs]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Check blueprints, policies and the roles file; report every problem with file:line:column.

    Exits 1 when any file has an error (warnings alone exit 0).
    """
    settings = _settings()
    targets = list(paths) if paths else [settings.blueprints, settings.policies]
    reports = validate_paths(targets, roles_file=settings.policies / "roles.yaml")
    if as_json:
        out.print_json(json.dumps([report.to_dict() for report in reports]))
    else:
        _print_reports(reports)
    if any(report.has_errors for report in reports):
        raise typer.Exit(1)


def _print_reports(reports: list[FileReport]) -> None:
    errors = warnings = 0
    for report in reports:
        status = "[red]invalid[/]" if report.has_errors else "[green]ok[/]"
        out.print(f"[bold]{escape(report.file)}[/] ({report.kind}) {status}")
        for issue in report.issues:
            colour = "red" if issue.severity is Severity.ERROR else "yellow"
            where = f"{issue.file}:{issue.line}:{issue.column}"
            path = f" [dim]({escape(issue.path)})[/]" if issue.path else ""
            out.print(
                f"  {escape(where)}: [{colour}]{issue.severity}[/]: {escape(issue.message)}{path}"
            )
            if issue.hint:
                out.print(f"      [dim]hint:[/] {escape(issue.hint)}")
        errors += sum(issue.is_error for issue in report.issues)
        warnings += sum(not issue.is_error for issue in report.issues)
    out.print(f"{len(reports)} file(s) checked: {errors} error(s), {warnings} warning(s)")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (the server also does this when it starts)."""
    settings = _settings()
    revision = upgrade_database(settings.database_url)
    out.print(f"database at revision {revision}")


class Transport(StrEnum):
    STDIO = "stdio"
    HTTP = "http"


@app.command()
def serve(
    blueprints: BlueprintsOption = None,
    policies: PoliciesOption = None,
    transport: Annotated[Transport, typer.Option(help="stdio, or Streamable HTTP")] = (
        Transport.STDIO
    ),
    host: Annotated[str, typer.Option(help="HTTP: the address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP: the port")] = 8765,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="HTTP: another Host header to accept (e.g. ops.example.com:443)"),
    ] = None,
    allowed_origin: Annotated[
        list[str] | None, typer.Option(help="HTTP: another Origin to accept")
    ] = None,
    welcome: Annotated[
        bool,
        typer.Option(help="HTTP: print how to connect; mint a token if there is none yet"),
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    log_json: Annotated[bool, typer.Option(help="Log one JSON object per line")] = False,
) -> None:
    """Serve the MCP server, with its worker, until stopped (stdio: until the client leaves).

    stdio acts as the local principal (OPSGATE_PRINCIPAL); HTTP serves /mcp to bearer tokens
    (opsgate token create). Logs go to stderr.
    """
    settings = _settings(blueprints, policies)
    catalog = load_catalog(settings.blueprints, settings.policies)  # fail now, listing issues
    configure_logging(level=log_level.upper(), as_json=log_json)
    err.print(
        f"opsgate {__version__}: {len(catalog.blueprints)} blueprint(s) from "
        f"{settings.blueprints}, {len(catalog.policies.rules)} policy rule(s) from "
        f"{settings.policies}; serving {transport.value}"
    )
    for name in sorted(catalog.blueprints):
        err.print(f"  blueprint {name}")
    if transport is Transport.STDIO:
        anyio.run(serve_stdio, settings)
        return
    if welcome:
        err.print(escape(server_welcome(settings, catalog.roles, host=host, port=port)))
    try:
        anyio.run(
            partial(
                serve_http,
                settings,
                host=host,
                port=port,
                allowed_hosts=allowed_host or (),
                allowed_origins=allowed_origin or (),
            )
        )
    except KeyboardInterrupt:
        pass


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="The principal the token acts as")],
    roles: Annotated[
        str, typer.Option(help="Comma-separated roles [default: the roles file's]")
    ] = "",
) -> None:
    """Mint a bearer token for the HTTP transport; it is printed once, only its hash is kept."""
    book = TokenBook(_settings().tokens_file)
    record, token = book.create(name, roles.split(","))
    err.print(f"token {record.id} for {record.name} (roles: {', '.join(record.roles) or '-'}):")
    out.print(token)


@token_app.command("list")
def token_list() -> None:
    """List the tokens (never their secrets)."""
    table = Table("id", "principal", "roles", "created")
    for record in TokenBook(_settings().tokens_file).records():
        table.add_row(
            record.id,
            record.name,
            ", ".join(record.roles),
            record.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    name_or_id: Annotated[str, typer.Argument(help="A token id, or a principal (all its tokens)")],
) -> None:
    """Revoke tokens; a running server refuses them from its next request."""
    for record in TokenBook(_settings().tokens_file).revoke(name_or_id):
        out.print(f"revoked token {record.id} of {record.name}")


T = TypeVar("T")
ExecutionArgument = Annotated[str, typer.Argument(help="The execution id (exe_...)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _with_runtime(use: Callable[[Runtime], Awaitable[T]]) -> T:
    """Open the runtime from the settings, run ``use`` on it, close it."""
    runtime = Runtime.open(_settings())
    try:
        return anyio.run(use, runtime)
    finally:
        runtime.close()


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (``3`` is a number, ``true`` a bool)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="-p/--param")
        try:
            values[key] = YAML(typ="safe").load(raw) if raw else ""
        except YAMLError:
            values[key] = raw
    return values


def _print_status(view: ExecutionStatusView, as_json: bool) -> None:
    if as_json:
        out.print_json(view.model_dump_json())
        return
    out.print(
        f"[bold]{view.execution_id}[/] {view.workflow_name}: [bold]{view.status}[/] "
        f"({view.steps_completed}/{view.total_steps} steps, {view.progress:g}%)"
    )
    table = Table("step", "status", "attempts", "seconds", "error")
    for step in view.steps:
        seconds = sum(run.duration_seconds or 0 for run in step.runs)
        errors = [run.error.get("message", "") for run in step.runs if run.error]
        table.add_row(
            step.step_id,
            step.status,
            str(step.attempts),
            f"{seconds:.2f}" if step.runs else "",
            escape(errors[-1] if errors else ""),
        )
    out.print(table)
    if view.error:
        out.print(f"[red]error:[/] {escape(str(view.error.get('message', view.error)))}")


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="The blueprint to run")],
    param: Annotated[
        list[str] | None, typer.Option("-p", "--param", help="A parameter as key=value")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Run once per key: the same key returns the same run")
    ] = None,
    plan_digest: Annotated[
        str | None, typer.Option(help="Refuse to start unless the plan is this one (opsgate plan)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a blueprint here, showing its progress, as the local principal.

    Exits 0 when the execution succeeded, 1 when it ended otherwise, 3 when it waits for an
    approval (decide it with opsgate approve / reject; a running worker or server continues it).
    """
    values = _parse_params(param or [])

    async def follow(runtime: Runtime) -> ExecutionStatusView:
        started = await runtime.service.execute_workflow(
            runtime.principal,
            name,
            values,
            idempotency_key=idempotency_key,
            plan_digest=plan_digest,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(runtime.worker.run)
            view = await _follow(runtime, started.execution_id, quiet=as_json)
            group.cancel_scope.cancel()
        return view

    view = _with_runtime(follow)
    _print_status(view, as_json)
    if view.status == "waiting_approval":
        err.print("waiting for approval: see opsgate approvals, then opsgate approve ID")
        raise typer.Exit(3)
    if view.status != "succeeded":
        raise typer.Exit(1)


async def _follow(runtime: Runtime, execution_id: str, *, quiet: bool) -> ExecutionStatusView:
    """Show a progress bar until the execution ends."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=quiet, transient=True) as bar:
        task = bar.add_task(execution_id, total=100)
        while True:
            view = await runtime.service.get_workflow_status(execution_id)
            label = view.current_sub_task or view.current_step or view.status
            bar.update(task, completed=view.progress, description=f"{view.workflow_name}: {label}")
            if view.status in EXECUTION_TERMINAL or view.status == "waiting_approval":
                return view
            await anyio.sleep(0.2)


@app.command()
def status(execution_id: ExecutionArgument, as_json: JsonOption = False) -> None:
    """Show where an execution stands, step by step."""

    async def read(runtime: Runtime) -> ExecutionStatusView:
        return await runtime.service.get_workflow_status(execution_id)

    _print_status(_with_runtime(read), as_json)


@app.command()
def events(
    execution_id: ExecutionArgument,
    after: Annotated[int, typer.Option(help="Only events after this sequence number")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many")] = 200,
    as_json: JsonOption = False,
) -> None:
    """Print an execution's event log, oldest first."""

    async def read(runtime: Runtime) -> Any:
        return await runtime.service.get_execution_events(
            execution_id, after_seq=after, limit=limit
        )

    found = _with_runtime(read)
    if as_json:
        out.print_json(found.model_dump_json())
        return
    table = Table("seq", "at", "type", "step", "actor", "data")
    for event in found.events:
        step = event.step_id or ""
        if event.target:
            step += f" @{event.target}"
        table.add_row(
            str(event.seq),
            event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
            event.type,
            step,
            event.actor,
            escape(json.dumps(event.data, default=str)[:80]),
        )
    out.print(table)
    if found.next_after_seq is not None:
        out.print(f"more: opsgate events {execution_id} --after {found.next_after_seq}")


@app.command()
def plan(
    name: Annotated[str, typer.Argument(help="The blueprint to plan")],
    param: Annotated[
        list[str] | None, typer.Option("-p", "--param", help="A parameter as key=value")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show what a run would do: steps by level, the policy verdict, gates, and the digest.

    Exits 1 when the policies refuse the plan.
    """
    values = _parse_params(param or [])

    async def make(runtime: Runtime) -> PlanView:
        return await runtime.service.plan_workflow(runtime.principal, name, values)

    found = _with_runtime(make)
    if as_json:
        out.print_json(found.model_dump_json())
    else:
        out.print(f"[bold]{found.workflow_name}[/] {found.version} on {', '.join(found.targets)}")
        for level, ids in enumerate(found.levels):
            out.print(f"  level {level}: {', '.join(ids)}")
        for gate in found.verdict.gates:
            who = ", ".join(gate.approver_roles + gate.approver_principals)
            where = gate.step_id or "the whole execution"
            out.print(f"  gate {gate.gate} on {where}: {gate.quorum} of {who}")
        out.print(escape(found.verdict.explanation))
        out.print(f"plan digest: {found.plan_digest}")
    if not found.verdict.allowed:
        raise typer.Exit(1)


@app.command()
def approvals(as_json: JsonOption = False) -> None:
    """List the pending approvals you (the local principal) may decide."""

    async def read(runtime: Runtime) -> ApprovalList:
        return await runtime.service.list_pending_approvals(runtime.principal)

    found = _with_runtime(read)
    if as_json:
        out.print_json(found.model_dump_json())
        return
    table = Table("approval", "execution", "workflow", "step", "gate", "requested by", "deadline")
    for a in found.approvals:
        deadline = a.deadline_at.isoformat(timespec="seconds") if a.deadline_at else ""
        table.add_row(
            a.approval_id,
            a.execution_id,
            a.workflow_name,
            a.step_id,
            a.gate,
            a.requested_by,
            deadline,
        )
    out.print(table)


ApprovalArgument = Annotated[str, typer.Argument(help="The approval id (apr_...)")]


@app.command()
def approve(
    approval_id: ApprovalArgument,
    comment: Annotated[str | None, typer.Option(help="Why, for the audit log")] = None,
    response: Annotated[
        list[str] | None, typer.Option("-r", "--response", help="A response field as key=value")
    ] = None,
) -> None:
    """Approve a gate as the local principal."""
    answer = _parse_params(response or []) or None

    async def decide(runtime: Runtime) -> ApprovalView:
        return await runtime.service.approve_step(
            runtime.principal, approval_id, comment=comment, response=answer, channel=Channel.CLI
        )

    _print_approval(_with_runtime(decide))


@app.command()
def reject(
    approval_id: ApprovalArgument,
    comment: Annotated[str, typer.Option(help="Why (required): the requester reads it")],
) -> None:
    """Reject a gate as the local principal: the step fails and its rollback runs."""

    async def decide(runtime: Runtime) -> ApprovalView:
        return await runtime.service.reject_step(
            runtime.principal, approval_id, comment=comment, channel=Channel.CLI
        )

    _print_approval(_with_runtime(decide))


def _print_approval(view: ApprovalView) -> None:
    out.print(
        f"[bold]{view.approval_id}[/] ({view.workflow_name} {view.step_id}, {view.gate}): "
        f"[bold]{view.status}[/], {view.approvals_so_far}/{view.quorum} approvals"
    )


def _control(act: Callable[[Runtime], Awaitable[ExecutionStatusView]]) -> None:
    _print_status(_with_runtime(act), as_json=False)


@app.command()
def cancel(
    execution_id: ExecutionArgument,
    cleanup: Annotated[
        bool, typer.Option(help="Roll back completed steps (--no-cleanup just stops)")
    ] = True,
    reason: Annotated[str | None, typer.Option(help="Why, for the event log")] = None,
) -> None:
    """Cancel an execution; a worker running it stops it and rolls back (unless --no-cleanup)."""
    _control(
        lambda rt: rt.service.cancel_execution(
            rt.principal, execution_id, cleanup=cleanup, reason=reason
        ),
    )


@app.command()
def pause(execution_id: ExecutionArgument) -> None:
    """Pause: running steps finish, no new step starts until resumed."""
    _control(lambda rt: rt.service.pause_execution(rt.principal, execution_id))


@app.command()
def resume(execution_id: ExecutionArgument) -> None:
    """Resume a paused execution (a running worker picks it up)."""
    _control(lambda rt: rt.service.resume_execution(rt.principal, execution_id))


@app.command("retry-step")
def retry_step(
    execution_id: ExecutionArgument,
    step_id: Annotated[str, typer.Argument(help="The failed step to run again")],
) -> None:
    """Re-run a failed step of a failed execution and continue from there."""
    _control(lambda rt: rt.service.retry_step(rt.principal, execution_id, step_id))


@app.command()
def executions(
    workflow: Annotated[str | None, typer.Option(help="Only this blueprint")] = None,
    state: Annotated[str | None, typer.Option("--status", help="Only this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List executions, newest first."""

    async def read(runtime: Runtime) -> Any:
        return await runtime.service.list_executions(
            workflow_name=workflow, status=state, limit=limit
        )

    found = _with_runtime(read)
    if as_json:
        out.print_json(found.model_dump_json())
        return
    table = Table("workflow", "status", "requested by", "created")
    table.columns.insert(0, Column("execution", no_wrap=True))
    for e in found.executions:
        table.add_row(
            e.execution_id,
            e.workflow_name,
            e.status,
            e.requested_by,
            e.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@app.command()
def metrics(
    workflow: Annotated[str | None, typer.Option(help="Only this blueprint")] = None,
    as_json: JsonOption = False,
) -> None:
    """Success rate, durations and rollbacks per blueprint."""

    async def read(runtime: Runtime) -> Any:
        return await runtime.service.get_workflow_metrics(workflow)

    found = _with_runtime(read)
    if as_json:
        out.print_json(found.model_dump_json())
        return
    table = Table(
        "workflow", "total", "succeeded", "failed", "rolled back", "success", "p50 s", "p95 s"
    )
    for m in found.metrics:
        rate = f"{m.success_rate:.0%}" if m.success_rate is not None else "-"
        p50 = f"{m.duration_p50_seconds:.2f}" if m.duration_p50_seconds is not None else "-"
        p95 = f"{m.duration_p95_seconds:.2f}" if m.duration_p95_seconds is not None else "-"
        table.add_row(
            m.workflow_name,
            str(m.total),
            str(m.succeeded),
            str(m.failed),
            str(m.rolled_back),
            rate,
            p50,
            p95,
        )
    out.print(table)


@app.command()
def worker(
    until_idle: Annotated[
        bool, typer.Option(help="Stop once nothing is left to do now (for scripts and cron)")
    ] = False,
) -> None:
    """Run a worker: claim executions from the database and drive them (until Ctrl-C).

    Several workers (or servers) may share one PostgreSQL database; SQLite is single node.
    """

    async def work(runtime: Runtime) -> None:
        err.print(f"worker {runtime.worker.owner} on {runtime.settings.database_url}")
        await runtime.worker.run(until_idle=until_idle)

    try:
        _with_runtime(work)
    except KeyboardInterrupt:
        err.print("stopped; executions it held are reclaimed when their leases expire")


@app.command()
def schedules(
    workflow: Annotated[str | None, typer.Option(help="Only this blueprint's schedules")] = None,
    upcoming: Annotated[
        float | None,
        typer.Option(help="Instead: the fires of the next HOURS, of every schedule, in order"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List schedules with their next fire, last fire and last outcome (or --upcoming HOURS)."""

    async def read(runtime: Runtime) -> Any:
        if upcoming is not None:
            return await runtime.service.get_upcoming_executions(upcoming, workflow)
        return await runtime.service.list_scheduled_workflows(workflow, fire_times=1)

    found = _with_runtime(read)
    if as_json:
        out.print_json(found.model_dump_json())
    elif isinstance(found, UpcomingList):
        table = Table("local time", "UTC", "workflow", "schedule", "note")
        for item in found.executions:
            table.add_row(
                item.fire.at_local,
                item.fire.at_utc.isoformat(timespec="seconds"),
                item.workflow_name,
                item.schedule_id,
                escape(item.fire.note or ""),
            )
        out.print(table)
        if found.truncated:
            out.print("more fires fall into the period: ask for fewer hours")
    else:
        table = Table("workflow", "cron", "timezone", "next fire", "last fire", "outcome", "state")
        table.columns.insert(0, Column("schedule", no_wrap=True))
        for s in found.schedules:
            table.add_row(
                s.schedule_id,
                s.workflow_name,
                s.cron,
                s.timezone,
                s.next_fire_times[0].at_local if s.next_fire_times else "-",
                s.last_fire_at.isoformat(timespec="seconds") if s.last_fire_at else "-",
                s.last_outcome or "-",
                "enabled" if s.enabled else "paused",
            )
        out.print(table)


@app.command()
def schedule(
    name: Annotated[str, typer.Argument(help="The blueprint to run on a schedule")],
    cron: Annotated[str, typer.Option(help="5 fields, or 6 with seconds first; or @daily ...")],
    tz: Annotated[str, typer.Option("--tz", help="IANA timezone of the cron times")] = "UTC",
    param: Annotated[
        list[str] | None, typer.Option("-p", "--param", help="A parameter as key=value")
    ] = None,
    overlap: Annotated[
        str, typer.Option(help="skip, queue, allow or cancel_previous")
    ] = OverlapPolicy.SKIP,
    misfire: Annotated[
        str, typer.Option(help="skip, run_once or run_all")
    ] = MisfirePolicy.RUN_ONCE,
    catchup_window: Annotated[
        int, typer.Option(help="Seconds: missed fires older than this are skipped")
    ] = DEFAULT_CATCHUP_WINDOW_SECONDS,
    grace: Annotated[
        int, typer.Option(help="Seconds a fire may be late and still run as on time")
    ] = DEFAULT_MISFIRE_GRACE_SECONDS,
    paused: Annotated[bool, typer.Option(help="Save it paused")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Create once per key: the same key returns the schedule")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Schedule a blueprint as the local principal; prints the next fire times (DST noted)."""
    values = _parse_params(param or [])

    async def create(runtime: Runtime) -> ScheduleView:
        return await runtime.service.schedule_workflow(
            runtime.principal,
            name,
            cron,
            tz,
            values,
            overlap_policy=overlap,
            misfire_policy=misfire,
            catchup_window_seconds=catchup_window,
            misfire_grace_seconds=grace,
            enabled=not paused,
            idempotency_key=idempotency_key,
        )

    view = _with_runtime(create)
    if as_json:
        out.print_json(view.model_dump_json())
        return
    state = "" if view.enabled else " (paused)"
    out.print(
        f"[bold]{view.schedule_id}[/] {view.workflow_name}: {view.cron} {view.timezone}{state}"
    )
    for fire in view.next_fire_times:
        note = f"  [yellow]{escape(fire.note)}[/]" if fire.note else ""
        out.print(f"  {fire.at_local}  ({fire.at_utc.isoformat(timespec='seconds')}){note}")
    out.print(f"overlap: {escape(view.overlap_policy_explained)}")
    out.print(f"misfire: {escape(view.misfire_policy_explained)}")


@app.command()
def scheduler() -> None:
    """Run the scheduler alone: fire due schedules into executions (until Ctrl-C).

    Workers (``opsgate worker``, ``opsgate serve``) run what it starts. Several schedulers may
    share one database: each fire starts one execution.
    """

    async def fire(runtime: Runtime) -> None:
        err.print(f"scheduler on {runtime.settings.database_url}")
        await runtime.scheduler.run()

    try:
        _with_runtime(fire)
    except KeyboardInterrupt:
        err.print("scheduler stopped")


LabDirOption = Annotated[
    Path, typer.Option("--dir", help="The lab directory (state, keys, sandboxes)")
]


def _print_lab(state: LabState) -> None:
    table = Table("service", "address", "detail")
    for row in lab_control.describe(state):
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


@lab_app.command("up")
def lab_up(
    directory: LabDirOption = Path(".lab"),
    host: Annotated[
        list[str] | None,
        typer.Option(help="A host as NAME:GROUP[+GROUP] (repeat) [default: web-1, web-2, db-1]"),
    ] = None,
    commission_seconds: Annotated[
        float, typer.Option(min=0, help="How long a MaaS commissioning takes")
    ] = 1.0,
) -> None:
    """Start the lab in the background: SSH hosts, a MaaS API, BMCs, a health service."""
    state = lab_control.up(directory, host or lab_control.DEFAULT_HOSTS, commission_seconds)
    out.print(f"lab running (pid {state.pid}) from {state.directory}")
    _print_lab(state)
    for line in lab_control.hints(state):
        out.print(escape(line))


@lab_app.command("down")
def lab_down(directory: LabDirOption = Path(".lab")) -> None:
    """Stop the lab and every process it started."""
    state = lab_control.down(directory)
    out.print(f"lab stopped (pid {state.pid})" if state else f"no lab was running from {directory}")


@lab_app.command("status")
def lab_status(directory: LabDirOption = Path(".lab"), as_json: JsonOption = False) -> None:
    """List what the lab runs on which port; exits 1 when no lab runs."""
    state = lab_control.status(directory)
    if state is None:
        err.print(f"no lab is running from {directory}: start one with opsgate lab up")
        raise typer.Exit(1)
    if as_json:
        out.print_json(state.model_dump_json())
        return
    out.print(f"lab running (pid {state.pid}) from {state.directory}")
    _print_lab(state)


def main() -> None:
    """Console entry point: run the app, turning opsgate errors into clean messages."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        app()  # exits by itself; usage errors are reported by typer without a traceback
    except OpsgateError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(2)

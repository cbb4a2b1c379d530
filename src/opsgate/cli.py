"""The ``opsgate`` command line (typer + rich): thin commands over the library.

User errors (an invalid file, an unreachable database) end in a one-line message on stderr and
a non-zero exit code, never in a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
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
from opsgate.catalog import FileReport, load_catalog, validate_paths
from opsgate.config import Settings, load_settings
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.errors import OpsgateError
from opsgate.runtime import Runtime
from opsgate.spec.issues import Severity
from opsgate.stores.migrate import upgrade_database
from opsgate.views import ExecutionStatusView

app = typer.Typer(
    name="opsgate",
    help="Governed operational workflows for AI assistants: validate, serve, run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

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


@app.command()
def serve(blueprints: BlueprintsOption = None, policies: PoliciesOption = None) -> None:
    """Load the blueprints and policies, prepare the database, and report what would be served.

    The MCP transports (stdio and Streamable HTTP) arrive with the MCP server; until then this
    command checks that everything it would serve loads, and exits.
    """
    settings = _settings(blueprints, policies)
    catalog = load_catalog(settings.blueprints, settings.policies)
    revision = upgrade_database(settings.database_url)
    err.print(
        f"opsgate {__version__}: {len(catalog.blueprints)} blueprint(s) from "
        f"{settings.blueprints}, {len(catalog.policies.rules)} policy rule(s) from "
        f"{settings.policies}, database at revision {revision}"
    )
    for name in sorted(catalog.blueprints):
        err.print(f"  blueprint {name}")
    err.print("The MCP transports are not available in this version yet.")


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
    as_json: JsonOption = False,
) -> None:
    """Run a blueprint here, showing its progress, as the local principal.

    Exits 0 when the execution succeeded, 1 when it ended otherwise.
    """
    values = _parse_params(param or [])

    async def follow(runtime: Runtime) -> ExecutionStatusView:
        started = await runtime.service.execute_workflow(
            runtime.principal, name, values, idempotency_key=idempotency_key
        )
        async with anyio.create_task_group() as group:
            group.start_soon(runtime.worker.run)
            view = await _follow(runtime, started.execution_id, quiet=as_json)
            group.cancel_scope.cancel()
        return view

    view = _with_runtime(follow)
    _print_status(view, as_json)
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
            if view.status in EXECUTION_TERMINAL:
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
def worker() -> None:
    """Run a worker: claim executions from the database and drive them (until Ctrl-C).

    Several workers (or servers) may share one PostgreSQL database; SQLite is single node.
    """

    async def work(runtime: Runtime) -> None:
        err.print(f"worker {runtime.worker.owner} on {runtime.settings.database_url}")
        await runtime.worker.run()

    try:
        _with_runtime(work)
    except KeyboardInterrupt:
        err.print("stopped; executions it held are reclaimed when their leases expire")


def main() -> None:
    """Console entry point: run the app, turning opsgate errors into clean messages."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        app()  # exits by itself; usage errors are reported by typer without a traceback
    except OpsgateError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(2)

"""The ``health_check`` action: probe an HTTP URL or a TCP port until it answers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import anyio
import httpx
from pydantic import Field, model_validator

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.actions.http import Status, expected_status
from opsgate.spec.durations import format_duration
from opsgate.spec.model import Duration, Integer, Label
from opsgate.spec.structure import invalid

_NEEDS = {"http": ("url",), "tcp": ("host", "port")}


class HealthCheckArguments(ActionArguments):
    """Arguments of ``health_check``: probe every ``interval`` until healthy or timed out."""

    kind: Literal["http", "tcp"] = Field(
        default="http", description="http: GET url and check the status; tcp: connect to a port"
    )
    url: Label | None = Field(default=None, description="http: the URL to probe")
    host: Label | None = Field(default=None, description="tcp: the host to connect to")
    port: Integer | None = Field(default=None, ge=1, le=65535, description="tcp: the port")
    expect_status: tuple[Status, ...] = Field(
        default=("200-299",),
        min_length=1,
        description="http: statuses that count as healthy (codes or ranges such as '200-399')",
    )
    interval: Duration = Field(default=timedelta(seconds=5), description="time between probes")
    timeout: Duration = Field(default=timedelta(seconds=5), description="limit for one probe")

    @model_validator(mode="after")
    def _fits_kind(self) -> HealthCheckArguments:
        needed = _NEEDS[self.kind]
        missing = [name for name in needed if getattr(self, name) is None]
        foreign = sorted(
            name
            for other, names in _NEEDS.items()
            if other != self.kind
            for name in names
            if name in self.model_fields_set
        )
        if self.kind == "tcp" and "expect_status" in self.model_fields_set:
            foreign.append("expect_status")
        if missing or foreign:
            raise invalid(
                f"of kind {self.kind} needs {', '.join(needed)}"
                + (f" and takes no {', '.join(foreign)}" if foreign else ""),
            )
        return self


class HealthCheckAction(Action[HealthCheckArguments]):
    """Probes until one probe succeeds; every failed probe is reported and waited out with
    ``interval``. The step's ``timeout`` bounds the whole check: when it passes, the step fails
    as a (retryable) timeout whose message carries the last probe's failure."""

    name = "health_check"
    arguments = HealthCheckArguments
    changes_things = False
    description = "probe a URL or port until healthy"

    async def run(self, args: HealthCheckArguments, ctx: StepContext) -> dict[str, Any]:
        started = ctx.clock()
        probes = 0
        while True:
            probes += 1
            problem = await _probe(args)
            if problem is None:
                waited = (ctx.clock() - started).total_seconds()
                return {"healthy": True, "probes": probes, "waited_seconds": waited}
            await ctx.report(f"not healthy yet (probe {probes}: {problem})")
            ctx.logger.info("health probe %d failed: %s", probes, problem)
            await ctx.sleep(args.interval.total_seconds())


async def _probe(args: HealthCheckArguments) -> str | None:
    """``None`` when healthy, else what was wrong."""
    limit = args.timeout.total_seconds()
    if args.kind == "tcp":
        assert args.host is not None and args.port is not None
        try:
            with anyio.fail_after(limit):
                stream = await anyio.connect_tcp(args.host, args.port)
        except TimeoutError:
            return (
                f"no connection to {args.host}:{args.port} within {format_duration(args.timeout)}"
            )
        except OSError as exc:
            return f"{args.host}:{args.port}: {exc.strerror or exc}"
        await stream.aclose()
        return None
    assert args.url is not None
    try:
        async with httpx.AsyncClient(timeout=limit, trust_env=False) as client:
            response = await client.get(args.url)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if expected_status(response.status_code, args.expect_status):
        return None
    return f"{args.url} answered {response.status_code}"

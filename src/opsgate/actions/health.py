"""The ``health_check`` action: probe an HTTP URL or a TCP port until it answers."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from opsgate.actions.base import ActionArguments
from opsgate.actions.http import Status
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

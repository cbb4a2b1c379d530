"""What every handler reaches through its context: the runtime, the bus, the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context

from opsgate.bus import EventBus
from opsgate.runtime import Runtime
from opsgate.service import Principal, Service


@dataclass
class AppState:
    """The lifespan state of one server: built once per process (per connection in-memory)."""

    runtime: Runtime
    bus: EventBus

    @property
    def service(self) -> Service:
        return self.runtime.service


def state_of(ctx: Context[Any]) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def principal_of(ctx: Context[Any]) -> Principal:
    """The caller: the bearer token's principal over HTTP, else the configured local one.

    A token minted with roles acts with exactly those; one minted without takes the roles file's.
    """
    token = get_access_token()
    if token is None:
        return state_of(ctx).runtime.principal
    name = token.subject or token.client_id
    roles = frozenset((token.claims or {}).get("roles", ()))
    return Principal(name, roles or state_of(ctx).runtime.catalog.roles.roles_of(name))

"""Resource change notifications in both protocol eras, fed by the event bus.

2026-07-28 clients listen (``subscriptions/listen``); the SDK serves that from the
:class:`~mcp.server.subscriptions.SubscriptionBus` we publish to. 2025-era clients send
``resources/subscribe``, which MCPServer does not serve: :class:`LegacySubscriptions` keeps,
per connection, the URIs it asked for and notifies them on the connection's own stream.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp_types import (
    EmptyResult,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

from opsgate.bus import EventBus

logger = logging.getLogger(__name__)

APPROVALS_URI = "opsgate://approvals/pending"


def execution_uris(execution_id: str) -> list[str]:
    return [f"opsgate://executions/{execution_id}", f"opsgate://executions/{execution_id}/events"]


class LegacySubscriptions:
    """The URIs each 2025-era connection subscribed to, and where to notify it."""

    def __init__(self) -> None:
        self._subscribers: dict[int, tuple[ServerSession, set[str]]] = {}

    def add(self, session: ServerSession, uri: str) -> None:
        # One ServerSession per request; the connection behind them is what persists (the SDK
        # has no public handle on it). Notifications go to its standalone stream.
        connection = session._connection
        key = id(connection)
        if key not in self._subscribers:
            connection.exit_stack.callback(self._subscribers.pop, key, None)
        _, uris = self._subscribers.get(key, (session, set()))
        uris.add(uri)
        self._subscribers[key] = (session, uris)

    def remove(self, session: ServerSession, uri: str) -> None:
        found = self._subscribers.get(id(session._connection))
        if found is not None:
            found[1].discard(uri)

    async def publish(self, uri: str) -> None:
        for key, (session, uris) in list(self._subscribers.items()):
            if uri not in uris:
                continue
            try:
                await session.send_resource_updated(uri)
            except Exception:  # a connection that went away: forget it, keep notifying others
                logger.debug("dropping a legacy subscriber of %s", uri, exc_info=True)
                self._subscribers.pop(key, None)


async def forward_events(
    bus: EventBus, modern: SubscriptionBus, legacy: LegacySubscriptions
) -> None:
    """Turn every new event into resource-updated notifications, until cancelled."""
    with bus.subscribe(buffer=4096) as notices:
        async for notice in notices:
            if notice.execution_id is None:
                continue
            uris = execution_uris(notice.execution_id)
            if notice.type.startswith("approval."):
                uris.append(APPROVALS_URI)
            for uri in uris:
                await modern.publish(ResourceUpdated(uri=uri))
                await legacy.publish(uri)


def legacy_handlers(
    subscriptions: LegacySubscriptions,
) -> list[tuple[str, type[Any], Any]]:
    """Request handlers for the 2025-era methods MCPServer leaves unserved."""

    async def subscribe(
        ctx: ServerRequestContext[Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        subscriptions.add(ctx.session, params.uri)
        return EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        subscriptions.remove(ctx.session, params.uri)
        return EmptyResult()

    async def set_level(
        ctx: ServerRequestContext[Any], params: SetLevelRequestParams
    ) -> EmptyResult:
        # opsgate logs to stderr, not to clients; accepted so that 2025-era clients work.
        logger.debug("client asked for log level %s", params.level)
        return EmptyResult()

    return [
        ("resources/subscribe", SubscribeRequestParams, subscribe),
        ("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe),
        ("logging/setLevel", SetLevelRequestParams, set_level),
    ]

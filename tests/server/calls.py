"""Calling tools in tests: the call, its structured result, its error text, and a client that
speaks Streamable HTTP with a bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent


async def call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    return await client.call_tool(tool, arguments)


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    [content] = result.content
    assert isinstance(content, TextContent)
    return content.text


async def wait_for_status(client: Client, execution_id: str, status: str) -> None:
    """Poll get_workflow_status until the worker moved the execution to ``status``."""
    with anyio.fail_after(10):
        while (  # noqa: ASYNC110 (the worker runs in this process; nothing else to await)
            data(await call(client, "get_workflow_status", execution_id=execution_id))["status"]
            != status
        ):
            await anyio.sleep(0.02)


@asynccontextmanager
async def bearer_client(base: str, token: str) -> AsyncIterator[Client]:
    """An MCP client of the server at ``base`` (its ``/mcp`` endpoint) acting as ``token``."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        yield client

"""The gated approval story end to end, across real processes: alice requests a gated run,
is refused her own approval (she holds an approver role, so only separation of duties stops
her), bob sees the pending approval and approves it, the run completes, and the events name
both. Bob is always a bearer token over Streamable HTTP; alice is one too, or the local
principal of an ``opsgate serve`` stdio subprocess sharing the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.server.calls import bearer_client, call, data, error_text
from tests.server.processes import BIN, Home, http_server, make_home

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, str]]:
    home = make_home(tmp_path_factory.mktemp("story"))
    with http_server(home) as base:
        yield home, base


@asynccontextmanager
async def over_http(home: Home, base: str, name: str, roles: str) -> AsyncIterator[Client]:
    async with bearer_client(base, home.token(name, roles)) as client:
        yield client


@asynccontextmanager
async def over_stdio(home: Home) -> AsyncIterator[Client]:
    """``opsgate serve`` on stdio as OPSGATE_PRINCIPAL=alice, on the HTTP server's database."""
    parameters = StdioServerParameters(command=str(BIN / "opsgate"), args=["serve"], env=home.env)
    async with Client(parameters) as client:
        yield client


async def settled(client: Client, execution_id: str, *, leaving: str) -> dict[str, Any]:
    """The status once the execution left ``leaving`` and is no longer pending or running."""
    with anyio.fail_after(20):
        while True:
            status = data(await call(client, "get_workflow_status", execution_id=execution_id))
            if status["status"] not in ("pending", "running", leaving):
                return status
            await anyio.sleep(0.05)


async def story(requester: Client, operator: Client, requester_name: str) -> None:
    started = data(await call(requester, "execute_workflow", workflow_name="gated"))
    execution_id = started["execution_id"]
    waiting = await settled(requester, execution_id, leaving="")
    assert waiting["status"] == "waiting_approval", waiting
    mine = data(await call(requester, "list_pending_approvals"))["approvals"]
    assert execution_id not in {a["execution_id"] for a in mine}  # never offered her own

    pending = data(await call(operator, "list_pending_approvals"))["approvals"]
    [approval] = [a for a in pending if a["execution_id"] == execution_id]
    assert approval["step_id"] == "apply" and approval["requested_by"] == requester_name
    refused = error_text(await call(requester, "approve_step", approval_id=approval["approval_id"]))
    assert f"{requester_name} requested execution {execution_id}" in refused
    assert "separation of duties" in refused and "another approver" in refused

    approved = data(
        await call(operator, "approve_step", approval_id=approval["approval_id"], comment="go")
    )
    assert approved["status"] == "granted"
    assert [d["principal"] for d in approved["decisions"]] == ["bob"]
    final = await settled(requester, execution_id, leaving="waiting_approval")
    assert final["status"] == "succeeded", final

    events = data(await call(operator, "get_execution_events", execution_id=execution_id))
    actors = {e["type"]: e["actor"] for e in events["events"]}
    assert actors["execution.created"] == requester_name
    assert actors["approval.granted"] == "bob"


async def test_over_http_the_requester_is_refused_and_the_operator_approves(
    served: tuple[Home, str],
) -> None:
    home, base = served
    async with (
        over_http(home, base, "alice", "operator") as alice,
        over_http(home, base, "bob", "operator,ops-manager") as bob,
    ):
        await story(alice, bob, "alice")


async def test_a_stdio_requester_is_refused_and_an_http_operator_approves(
    served: tuple[Home, str],
) -> None:
    home, base = served
    async with over_stdio(home) as alice, over_http(home, base, "bob", "operator") as bob:
        await story(alice, bob, "alice")

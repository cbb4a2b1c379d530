"""Plans, verdicts and approvals through the protocol: the requester cannot approve its own
gate, another principal can, and the events name both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server import MCPServer

from opsgate.server.state import AppState
from tests.server.test_tools import call, data, error_text

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_requester_is_refused_and_another_principal_approves(
    make_server: Callable[..., MCPServer[AppState]], mode: str
) -> None:
    async with (
        Client(make_server("alice"), mode=mode) as alice,
        Client(make_server("bob"), mode=mode) as bob,
    ):
        plan = data(await call(alice, "plan_workflow", workflow_name="gated"))
        verdict = data(await call(alice, "validate_workflow_policies", workflow_name="gated"))
        assert verdict["allowed"] is True
        stale = error_text(
            await call(alice, "execute_workflow", workflow_name="gated", plan_digest="0" * 64)
        )
        assert "plan_workflow" in stale
        started = data(
            await call(
                alice,
                "execute_workflow",
                workflow_name="gated",
                plan_digest=plan["plan_digest"],
                wait_seconds=20,
            )
        )
        assert started["status"] == "waiting_approval"
        assert "approve_step" in started["next_step"]
        execution_id = started["execution_id"]
        assert data(await call(alice, "list_pending_approvals"))["approvals"] == []
        [pending] = data(await call(bob, "list_pending_approvals"))["approvals"]
        assert pending["execution_id"] == execution_id and pending["step_id"] == "apply"
        refused = error_text(await call(alice, "approve_step", approval_id=pending["approval_id"]))
        assert "alice" in refused
        no_reason = error_text(
            await call(bob, "reject_step", approval_id=pending["approval_id"], comment="")
        )
        assert "comment" in no_reason
        approved = data(
            await call(bob, "approve_step", approval_id=pending["approval_id"], comment="ok")
        )
        assert approved["approval_id"] == pending["approval_id"]
        unknown = error_text(await call(bob, "approve_step", approval_id="apr_nope"))
        assert "apr_nope" in unknown
        final = await _settled(alice, execution_id)
        assert final["status"] == "succeeded"
        events = data(await call(alice, "get_execution_events", execution_id=execution_id))
    actors = {e["type"]: e["actor"] for e in events["events"]}
    assert actors["execution.created"] == "alice"
    assert actors["approval.granted"] == "bob"


async def _settled(client: Client, execution_id: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            status = data(await call(client, "get_workflow_status", execution_id=execution_id))
            if status["status"] not in ("pending", "running", "waiting_approval"):
                return status
            await anyio.sleep(0.02)

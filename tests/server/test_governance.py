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
from tests.server.calls import call, data, error_text

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


class Answer:
    """The human at the requesting client, answering the confirmation question."""

    def __init__(self, action: str, confirm: bool = True) -> None:
        self.action, self.confirm = action, confirm
        self.questions: list[str] = []

    async def __call__(self, context: Any, params: Any) -> Any:
        from mcp.types import ElicitResult

        self.questions.append(params.message)
        content = {"confirm": self.confirm, "comment": ""} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)


async def _waiting_confirmation(client: Client) -> tuple[str, str]:
    """Start ``confirmed`` and wait at its gate: the execution id and the approval id."""
    started = data(
        await call(client, "execute_workflow", workflow_name="confirmed", wait_seconds=20)
    )
    assert started["status"] == "waiting_approval"
    execution_id = started["execution_id"]
    events = data(await call(client, "get_execution_events", execution_id=execution_id))
    [requested] = [e for e in events["events"] if e["type"] == "approval.requested"]
    return execution_id, requested["data"]["approval_id"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_confirmation_is_asked_of_the_requester_in_the_client(
    make_server: Callable[..., MCPServer[AppState]], mode: str
) -> None:
    human = Answer("accept")
    alice_server = make_server("alice")
    async with Client(alice_server, mode=mode, elicitation_callback=human) as alice:
        execution_id, approval_id = await _waiting_confirmation(alice)
        confirmed = data(await call(alice, "approve_step", approval_id=approval_id))
        assert (confirmed["status"], confirmed["confirm"]) == ("granted", True)
        assert human.questions == [
            f"Run step 'apply' (log) of confirmed (execution {execution_id}) now?"
        ]
        status = (await _settled(alice, execution_id))["status"]
        assert status == "succeeded"
        events = data(await call(alice, "get_execution_events", execution_id=execution_id))
        decision = next(e for e in events["events"] if e["type"] == "approval.decision_recorded")
        assert (decision["actor"], decision["data"]["channel"]) == ("alice", "elicitation")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_declined_confirmation_rejects_and_a_dismissed_one_waits(
    make_server: Callable[..., MCPServer[AppState]], mode: str
) -> None:
    alice_server = make_server("alice")
    async with Client(alice_server, mode=mode, elicitation_callback=Answer("cancel")) as alice:
        execution_id, approval_id = await _waiting_confirmation(alice)
        dismissed = error_text(await call(alice, "approve_step", approval_id=approval_id))
        assert "dismissed in the client" in dismissed and "still waits" in dismissed
    async with Client(
        alice_server, mode=mode, elicitation_callback=Answer("accept", confirm=False)
    ) as alice:
        declined = data(await call(alice, "approve_step", approval_id=approval_id))
        assert declined["status"] == "rejected"
        assert (await _settled(alice, execution_id))["status"] == "failed"  # nothing ran to undo


async def test_without_elicitation_a_confirmation_is_an_approval_for_the_approvers(
    make_server: Callable[..., MCPServer[AppState]],
) -> None:
    alice_server = make_server("alice")
    async with Client(alice_server) as alice, Client(make_server("bob")) as bob:
        execution_id, approval_id = await _waiting_confirmation(alice)
        refused = error_text(await call(alice, "approve_step", approval_id=approval_id))
        assert "alice may not decide" in refused and "supports elicitation" in refused
        approved = data(await call(bob, "approve_step", approval_id=approval_id))
        assert approved["status"] == "granted"
        assert (await _settled(alice, execution_id))["status"] == "succeeded"

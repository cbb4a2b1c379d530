"""Every tool through the real protocol, in both eras: structured results and error texts."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client
from mcp.server import MCPServer

from opsgate.server.state import AppState
from opsgate.service import Service
from tests.server.calls import call, data, error_text, wait_for_status

pytestmark = pytest.mark.anyio

MODES = pytest.mark.parametrize("mode", ["auto", "legacy"])

CONTRACT_TOOLS = [
    "list_workflows",
    "get_workflow_details",
    "validate_workflow_policies",
    "plan_workflow",
    "execute_workflow",
    "get_workflow_status",
    "list_executions",
    "get_execution_events",
    "get_workflow_metrics",
    "cancel_execution",
    "pause_execution",
    "resume_execution",
    "retry_step",
    "list_pending_approvals",
    "approve_step",
    "reject_step",
    "schedule_workflow",
    "list_scheduled_workflows",
    "update_schedule",
    "delete_schedule",
    "get_upcoming_executions",
    "get_workflow_targets",
]


@MODES
async def test_tools_are_listed_in_a_fixed_order_with_schemas_and_annotations(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == CONTRACT_TOOLS
    by_name = {tool.name: tool for tool in tools}
    for tool in tools:
        assert tool.output_schema is not None, tool.name
        assert tool.description and "\n" not in tool.description and "  " not in tool.description
        assert "ctx" not in tool.input_schema["properties"]
        assert "principal" not in tool.input_schema["properties"]  # identity is authentication
    assert by_name["list_workflows"].annotations.read_only_hint is True
    execute = by_name["execute_workflow"].annotations
    assert (execute.read_only_hint, execute.destructive_hint) == (False, True)
    assert by_name["cancel_execution"].annotations.destructive_hint is True
    wait = by_name["execute_workflow"].input_schema["properties"]["wait_seconds"]
    assert (wait["minimum"], wait["maximum"]) == (0, 60)
    status = by_name["list_executions"].input_schema
    assert "waiting_approval" in str(status)  # the status argument is an enum


@MODES
async def test_list_workflows_pages_by_name_and_refuses_a_forged_cursor(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        first = data(await call(client, "list_workflows", limit=2))
        assert [w["workflow_name"] for w in first["workflows"]] == ["broken", "confirmed"]
        assert first["next_cursor"] is not None
        second = data(await call(client, "list_workflows", limit=2, cursor=first["next_cursor"]))
        assert [w["workflow_name"] for w in second["workflows"]] == ["deploy", "gated"]
        deploy = second["workflows"][0]
        assert deploy["parameters"] == ["host*", "replicas", "token"]
        assert deploy["risk"] == "high"
        rest = data(await call(client, "list_workflows", cursor=second["next_cursor"]))
        assert [w["workflow_name"] for w in rest["workflows"]] == ["hello"]
        assert rest["next_cursor"] is None
        demo = data(await call(client, "list_workflows", category="demo"))
        assert [w["workflow_name"] for w in demo["workflows"]] == ["broken", "hello"]
        bad = error_text(await call(client, "list_workflows", cursor="%%%"))
        assert "invalid cursor" in bad and "next_cursor" in bad
        too_many = error_text(await call(client, "list_workflows", limit=1000))
        assert "limit" in too_many


@MODES
async def test_get_workflow_details_describes_parameters_and_suggests_close_names(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        details = data(await call(client, "get_workflow_details", workflow_name="deploy"))
        params = {p["name"]: p for p in details["parameters"]}
        assert params["host"]["required"] and params["host"]["pattern"] == "^[a-z0-9-]+$"
        assert params["replicas"] == {**params["replicas"], "default": 2, "min": 1, "max": 5}
        assert params["token"]["secret"] and params["token"]["default"] is None  # never shown
        assert [s["step_id"] for s in details["steps"]] == ["announce", "ship", "verify"]
        assert details["steps"][1]["has_rollback"] is True
        assert details["locks"] == ["host:{{ params.host }}"]
        missing = error_text(await call(client, "get_workflow_details", workflow_name="deplyo"))
        assert "'deplyo' not found" in missing and "did you mean 'deploy'" in missing
        assert "list_workflows" in missing


@MODES
async def test_execute_workflow_waits_reports_progress_and_finishes(
    server: MCPServer[AppState], mode: str
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with Client(server, mode=mode) as client:
        result = await client.call_tool(
            "execute_workflow",
            {"workflow_name": "hello", "wait_seconds": 20},
            progress_callback=on_progress,
        )
        outcome = data(result)
        assert outcome["status"] == "succeeded" and outcome["created"] is True
        assert (outcome["steps_completed"], outcome["total_steps"]) == (2, 2)
        assert "get_execution_events" in outcome["next_step"]
        values = [value for value, _, _ in progress]
        assert values == sorted(set(values)) and values[-1] == 2  # growing, total at the end
        assert all(total == 2 for _, total, _ in progress)
        assert progress[-1][2] == "2/2 steps done, succeeded"
        events = data(
            await call(client, "get_execution_events", execution_id=outcome["execution_id"])
        )
        types = [e["type"] for e in events["events"]]
        assert types[0] == "execution.created" and types[-1] == "execution.succeeded"
        assert events["events"][0]["actor"] == "alice"


@MODES
async def test_execute_workflow_returns_at_once_and_an_idempotency_key_returns_the_same_run(
    server: MCPServer[AppState], mode: str, release: anyio.Path
) -> None:
    async with Client(server, mode=mode) as client:
        arguments = {"workflow_name": "deploy", "parameters": {"host": "web-1"}}
        first = data(await call(client, "execute_workflow", **arguments, idempotency_key="k"))
        again = data(await call(client, "execute_workflow", **arguments, idempotency_key="k"))
        assert again["execution_id"] == first["execution_id"] and again["created"] is False
        assert first["status"] in ("pending", "running")
        assert "get_workflow_status" in first["next_step"]
        await release.touch()
        done = data(
            await call(
                client, "execute_workflow", **arguments, idempotency_key="k", wait_seconds=20
            )
        )
        assert done["status"] == "succeeded"


@MODES
async def test_execute_workflow_explains_invalid_parameters_and_unknown_names(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        text = error_text(
            await call(
                client,
                "execute_workflow",
                workflow_name="deploy",
                parameters={"host": "Bad Host!", "replicas": 9},
            )
        )
        assert "invalid parameters for workflow 'deploy'" in text
        assert "host" in text and "replicas" in text and "get_workflow_details" in text
        unknown = error_text(await call(client, "execute_workflow", workflow_name="helo"))
        assert "did you mean 'hello'" in unknown
        too_long = error_text(
            await call(client, "execute_workflow", workflow_name="hello", wait_seconds=61)
        )
        assert "wait_seconds" in too_long
        listed = data(await call(client, "list_executions"))
        assert listed["executions"] == []


@MODES
async def test_status_listing_and_metrics_of_a_failed_execution(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        failed = data(
            await call(client, "execute_workflow", workflow_name="broken", wait_seconds=20)
        )
        assert failed["status"] == "failed"
        assert "retry_step" in failed["next_step"]
        execution_id = failed["execution_id"]
        status = data(await call(client, "get_workflow_status", execution_id=execution_id))
        [step] = status["steps"]
        assert step["status"] == "failed" and "disk full" in step["runs"][0]["error"]["message"]
        listed = data(await call(client, "list_executions", status="failed", limit=1))
        assert [e["execution_id"] for e in listed["executions"]] == [execution_id]
        assert (
            data(await call(client, "list_executions", workflow_name="hello"))["executions"] == []
        )
        bad = error_text(await call(client, "list_executions", cursor="not-a-cursor"))
        assert "invalid cursor" in bad
        metrics = data(await call(client, "get_workflow_metrics", workflow_name="broken"))
        assert metrics["metrics"][0]["failed"] == 1
        unknown = error_text(await call(client, "get_workflow_status", execution_id="exe_nope"))
        assert "exe_nope" in unknown and "not found" in unknown
        unknown = error_text(await call(client, "get_workflow_metrics", workflow_name="brokn"))
        assert "did you mean 'broken'" in unknown

        retried = data(await call(client, "retry_step", execution_id=execution_id, step_id="boom"))
        assert retried["execution_id"] == execution_id
        nothing = error_text(
            await call(client, "retry_step", execution_id=execution_id, step_id="nope")
        )
        assert "nope" in nothing


@MODES
async def test_pause_resume_and_cancel_name_the_current_state_when_refused(
    server: MCPServer[AppState], mode: str, release: anyio.Path
) -> None:
    async with Client(server, mode=mode) as client:
        started = data(
            await call(client, "execute_workflow", workflow_name="deploy", parameters={"host": "a"})
        )
        execution_id = started["execution_id"]
        await wait_for_status(client, execution_id, "running")
        refused = error_text(await call(client, "resume_execution", execution_id=execution_id))
        assert "cannot" in refused and execution_id in refused
        assert "get_workflow_status" in refused
        paused = data(await call(client, "pause_execution", execution_id=execution_id))
        assert paused["status"] == "paused"
        again = error_text(await call(client, "pause_execution", execution_id=execution_id))
        assert "it is paused" in again
        resumed = data(await call(client, "resume_execution", execution_id=execution_id))
        assert resumed["status"] in ("running", "pending")
        cancelled = data(
            await call(
                client, "cancel_execution", execution_id=execution_id, reason="test", cleanup=False
            )
        )
        assert cancelled["status"] == "cancelled"
        late = error_text(await call(client, "cancel_execution", execution_id=execution_id))
        assert "it is cancelled" in late
        events = data(await call(client, "get_execution_events", execution_id=execution_id))
        actors = {e["actor"] for e in events["events"] if e["type"] == "execution.cancelled"}
        assert actors == {"alice"}
        await release.touch()


@MODES
async def test_an_unexpected_failure_is_logged_with_a_reference_the_model_gets(
    server: MCPServer[AppState],
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: Service, workflow_name: str | None = None) -> None:
        raise RuntimeError("the secret internals")

    monkeypatch.setattr(Service, "get_workflow_metrics", broken)
    async with Client(server, mode=mode) as client:
        text = error_text(await call(client, "get_workflow_metrics"))
    assert "the secret internals" not in text
    reference = text.split("reference ")[1].split(")")[0]
    assert len(reference) == 12
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None

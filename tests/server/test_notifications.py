"""Resources, their change notifications in both eras (on SQLite and PostgreSQL), prompts and
completions, through the real protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.server import MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated
from mcp.types import (
    PromptReference,
    ResourceTemplateReference,
    ServerNotification,
    TextResourceContents,
)

from opsgate.server.state import AppState

pytestmark = pytest.mark.anyio

MODES = pytest.mark.parametrize("mode", ["auto", "legacy"])


async def read_json(client: Client, uri: str) -> Any:
    [contents] = (await client.read_resource(uri)).contents
    assert isinstance(contents, TextResourceContents)
    assert contents.mime_type == "application/json"
    return json.loads(contents.text)


async def start_deploy(client: Client) -> str:
    result = await client.call_tool(
        "execute_workflow", {"workflow_name": "deploy", "parameters": {"host": "web-1"}}
    )
    assert result.structured_content is not None
    return str(result.structured_content["execution_id"])


async def test_resource_updates_reach_a_modern_listen_stream(
    make_server: Callable[..., MCPServer[AppState]], database_url: str, release: anyio.Path
) -> None:
    async with Client(make_server(database_url=database_url), mode="auto") as client:
        execution_id = await start_deploy(client)
        uri = f"opsgate://executions/{execution_id}"
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await release.touch()
            seen = 0
            with anyio.fail_after(10):
                async for event in subscription:
                    assert event == ResourceUpdated(uri=uri)
                    seen += 1
                    if (await read_json(client, uri))["status"] == "succeeded":
                        break
        assert seen >= 1


async def test_resource_updates_reach_a_legacy_subscriber(
    make_server: Callable[..., MCPServer[AppState]], database_url: str, release: anyio.Path
) -> None:
    updated: list[str] = []
    done = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification) and message.method == (
            "notifications/resources/updated"
        ):
            updated.append(message.params.uri)
            if message.params.uri.endswith("/events"):
                done.set()

    server = make_server(database_url=database_url)
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        capabilities = client.server_capabilities
        assert capabilities.resources is not None and capabilities.resources.subscribe
        assert capabilities.completions is not None and capabilities.logging is not None
        execution_id = await start_deploy(client)
        uri = f"opsgate://executions/{execution_id}/events"
        with pytest.warns(MCPDeprecationWarning):  # the 2025-era methods, on purpose
            await client.subscribe_resource(uri)
            await client.set_logging_level("warning")
        await release.touch()
        with anyio.fail_after(10):
            await done.wait()
        with pytest.warns(MCPDeprecationWarning):
            await client.unsubscribe_resource(uri)
    assert set(updated) == {uri}  # only what it subscribed to


@MODES
async def test_resources_read_blueprints_executions_and_events(
    server: MCPServer[AppState], mode: str, release: anyio.Path
) -> None:
    async with Client(server, mode=mode) as client:
        templates = (await client.list_resource_templates()).resource_templates
        assert {t.uri_template for t in templates} == {
            "opsgate://blueprints/{name}",
            "opsgate://executions/{execution_id}",
            "opsgate://executions/{execution_id}/events",
            "opsgate://approvals/pending{?workflow_name}",
        }
        blueprint = await read_json(client, "opsgate://blueprints/hello")
        assert blueprint["workflow_name"] == "hello"
        execution_id = await start_deploy(client)
        status = await read_json(client, f"opsgate://executions/{execution_id}")
        assert status["execution_id"] == execution_id
        events = await read_json(client, f"opsgate://executions/{execution_id}/events")
        assert events["events"][0]["type"] == "execution.created"
        with pytest.raises(MCPError) as raised:
            await client.read_resource("opsgate://blueprints/helo")
        assert "did you mean 'hello'" in raised.value.error.message
        with pytest.raises(MCPError, match="exe_missing"):
            await client.read_resource("opsgate://executions/exe_missing")
        await release.touch()


async def test_the_pending_approvals_resource_is_per_reader_and_updated_in_both_eras(
    make_server: Callable[..., MCPServer[AppState]],
) -> None:
    uri = "opsgate://approvals/pending"
    legacy_updated = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification) and message.method == (
            "notifications/resources/updated"
        ):
            assert message.params.uri == uri
            legacy_updated.set()

    async with (
        Client(make_server("alice"), mode="auto") as alice,
        Client(make_server("bob"), mode="auto") as bob,
        Client(make_server("bob"), mode="legacy", message_handler=on_message) as bob_legacy,
    ):
        assert (await read_json(bob, uri))["approvals"] == []
        with pytest.warns(MCPDeprecationWarning):
            await bob_legacy.subscribe_resource(uri)
        async with bob.listen(resource_subscriptions=[uri]) as subscription:
            started = await alice.call_tool("execute_workflow", {"workflow_name": "gated"})
            assert started.structured_content is not None
            execution_id = started.structured_content["execution_id"]
            with anyio.fail_after(10):
                async for event in subscription:
                    assert event == ResourceUpdated(uri=uri)
                    if (await read_json(bob, uri))["approvals"]:
                        break
        [pending] = (await read_json(bob, uri))["approvals"]
        assert pending["execution_id"] == execution_id and pending["requested_by"] == "alice"
        assert (await read_json(alice, uri))["approvals"] == []  # never her own to decide
        assert (await read_json(bob, f"{uri}?workflow_name=gated"))["approvals"] == [pending]
        assert (await read_json(bob, f"{uri}?workflow_name=hello"))["approvals"] == []
        with anyio.fail_after(10):
            await legacy_updated.wait()
        await bob.call_tool("approve_step", {"approval_id": pending["approval_id"]})


@MODES
async def test_prompts_guide_the_safe_ways_of_working(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        names = [p.name for p in (await client.list_prompts()).prompts]
        assert names == [
            "run_workflow_safely",
            "review_pending_approvals",
            "triage_failed_execution",
        ]
        run = await client.get_prompt(
            "run_workflow_safely", {"workflow_name": "deploy", "parameters": '{"host": "a"}'}
        )
        text = str(run.messages[0].content)
        assert "get_workflow_details" in text and "never try to approve it yourself" in text
        triage = await client.get_prompt("triage_failed_execution", {"execution_id": "exe_1"})
        assert "get_execution_events(execution_id='exe_1')" in str(triage.messages[0].content)


@MODES
async def test_completions_offer_workflow_names_and_execution_ids(
    server: MCPServer[AppState], mode: str, release: anyio.Path
) -> None:
    async with Client(server, mode=mode) as client:
        prompt = PromptReference(name="run_workflow_safely")
        found = await client.complete(prompt, {"name": "workflow_name", "value": "de"})
        assert found.completion.values == ["deploy"]
        template = ResourceTemplateReference(uri="opsgate://blueprints/{name}")
        found = await client.complete(template, {"name": "name", "value": ""})
        assert found.completion.values == ["broken", "confirmed", "deploy", "gated", "hello"]
        execution_id = await start_deploy(client)
        found = await client.complete(
            PromptReference(name="triage_failed_execution"),
            {"name": "execution_id", "value": execution_id[:6]},
        )
        assert execution_id in found.completion.values
        nothing = await client.complete(prompt, {"name": "parameters", "value": "x"})
        assert nothing.completion.values == []
        await release.touch()

"""stdio in a real ``opsgate serve`` subprocess: the local principal, and nothing but protocol
on stdout (the client would fail to parse anything else)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.server.processes import BIN, make_home

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_serves_the_local_principal(tmp_path: Path, mode: str) -> None:
    home = make_home(tmp_path)
    parameters = StdioServerParameters(
        command=str(BIN / "opsgate"), args=["serve", "--log-level", "DEBUG"], env=home.env
    )
    async with Client(parameters, mode=mode) as client:
        listed = await client.call_tool("list_workflows", {})
        assert listed.structured_content is not None
        names = [w["workflow_name"] for w in listed.structured_content["workflows"]]
        assert names == ["gated", "hello", "slow"]
        details = await client.call_tool("get_workflow_details", {"workflow_name": "hello"})
        assert not details.is_error
        run = await client.call_tool(
            "execute_workflow", {"workflow_name": "hello", "wait_seconds": 20}
        )
        assert run.structured_content is not None
        assert run.structured_content["status"] == "succeeded"
        events = await client.call_tool(
            "get_execution_events", {"execution_id": run.structured_content["execution_id"]}
        )
        assert events.structured_content is not None
        assert events.structured_content["events"][0]["actor"] == "alice"

"""The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector``) against ``opsgate serve``:
it spawns the server over stdio, and reaches it over Streamable HTTP with a bearer token."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.npm_tools import NpmTools
from tests.server.processes import BIN, Home, http_server, make_home


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return make_home(tmp_path_factory.mktemp("inspector"))


@pytest.fixture(scope="module")
def served(home: Home) -> Iterator[str]:
    with http_server(home) as base:
        yield f"{base}/mcp"


def inspect(tools: NpmTools, home: Home, *target: str, method: str, **tool: str) -> Any:
    """One Inspector CLI call; its JSON output, or a failure quoting what it printed."""
    arguments = ["--method", method]
    if "tool_name" in tool:
        arguments += ["--tool-name", tool.pop("tool_name")]
    arguments += [arg for key, value in tool.items() for arg in ("--tool-arg", f"{key}={value}")]
    done = subprocess.run(
        [str(tools.inspector), "--cli", "-q", *target, *arguments],
        env=tools.env(home.root / "inspector-home"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout)


def stdio_target(home: Home) -> list[str]:
    """The command the Inspector spawns; it passes only the variables given with ``-e``."""
    variables = [f"{k}={v}" for k, v in home.env.items() if k.startswith("OPSGATE_")]
    return [*(arg for pair in variables for arg in ("-e", pair)), str(BIN / "opsgate"), "serve"]


def check_catalog(tools: NpmTools, home: Home, target: list[str]) -> None:
    listed = inspect(tools, home, *target, "--strict", method="tools/list")  # exit 6: not portable
    names = [tool["name"] for tool in listed["tools"]]
    assert names[:2] == ["list_workflows", "get_workflow_details"]
    assert all("outputSchema" in tool for tool in listed["tools"])
    workflows = inspect(tools, home, *target, method="tools/call", tool_name="list_workflows")
    assert workflows["isError"] is False
    found = [w["workflow_name"] for w in workflows["structuredContent"]["workflows"]]
    assert found == ["gated", "hello", "slow"]
    details = inspect(
        tools,
        home,
        *target,
        method="tools/call",
        tool_name="get_workflow_details",
        workflow_name="hello",
    )
    assert details["isError"] is False
    steps = [step["step_id"] for step in details["structuredContent"]["steps"]]
    assert steps == ["first", "second"]


def test_the_inspector_lists_and_calls_tools_over_stdio(npm_tools: NpmTools, home: Home) -> None:
    check_catalog(npm_tools, home, stdio_target(home))


def test_the_inspector_lists_and_calls_tools_over_http_with_a_bearer_token(
    npm_tools: NpmTools, home: Home, served: str
) -> None:
    token = home.token("inspector", "viewer")
    check_catalog(npm_tools, home, [served, "--header", f"Authorization: Bearer {token}"])


def test_the_inspector_without_a_token_is_refused_and_told_to_authenticate(
    npm_tools: NpmTools, home: Home, served: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            str(npm_tools.inspector),
            *("--cli", "-q", "--stored-auth-only", served),
            *("--method", "tools/list"),
        ],
        env=npm_tools.env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    error = json.loads(done.stderr)["error"]
    assert error["code"] == "auth_required" and "invalid_token" in error["message"]

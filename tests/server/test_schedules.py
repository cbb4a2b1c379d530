"""Schedules and targets through the real protocol, in both eras: each tool's structured result,
and the errors a model acts on (every problem at once, the owner rule, unknown ids)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client
from mcp.server import MCPServer

from opsgate.config import Settings
from opsgate.server import create_server
from opsgate.server.state import AppState
from tests.server.calls import call, data, error_text
from tests.server.test_tools import MODES

pytestmark = pytest.mark.anyio

FLEET = """
name: fleet
version: "1"
description: Log on each selected host.
risk: low
parameters:
  hosts: {type: string, default: "group:web"}
targets: "{{ params.hosts }}"
steps:
  - {id: note, action: log, for_each: targets, with: {message: "on {{ target.name }}"}}
"""
INVENTORY = """
targets:
  web-1: {address: 127.0.0.1, groups: [web], labels: {env: prod}}
  web-2: {address: 127.0.0.1, groups: [web], labels: {env: staging}}
  db-1: {address: 127.0.0.1, groups: [db]}
"""


@MODES
async def test_a_schedule_is_created_listed_paused_and_deleted_by_its_owner(
    make_server: Callable[..., MCPServer[AppState]], mode: str
) -> None:
    async with (
        Client(make_server("alice"), mode=mode) as alice,
        Client(make_server("bob"), mode=mode) as bob,
    ):
        created = data(
            await call(
                alice,
                "schedule_workflow",
                workflow_name="hello",
                cron="0 3 * * *",
                timezone="Europe/Berlin",
                overlap_policy="queue",
                idempotency_key="nightly",
            )
        )
        schedule_id = created["schedule_id"]
        assert created["owner"] == "alice" and created["created"] is True
        assert created["overlap_policy"] == "queue" and created["overlap_policy_explained"]
        assert len(created["next_fire_times"]) == 5
        assert "T03:00:00" in created["next_fire_times"][0]["at_local"]
        again = data(
            await call(
                alice,
                "schedule_workflow",
                workflow_name="hello",
                cron="0 3 * * *",
                timezone="Europe/Berlin",
                idempotency_key="nightly",
            )
        )
        assert again["schedule_id"] == schedule_id and again["created"] is False

        listed = data(await call(bob, "list_scheduled_workflows", fire_times=1))
        [seen] = listed["schedules"]
        assert seen["schedule_id"] == schedule_id and len(seen["next_fire_times"]) == 1
        assert data(await call(bob, "list_scheduled_workflows", workflow_name="gated")) == {
            "schedules": []
        }
        upcoming = data(await call(bob, "get_upcoming_executions", hours_ahead=48))
        assert [u["schedule_id"] for u in upcoming["executions"]] == [schedule_id] * 2
        assert upcoming["truncated"] is False
        first = data(await call(bob, "get_upcoming_executions", hours_ahead=48, limit=1))
        assert len(first["executions"]) == 1 and first["truncated"] is True

        foreign = error_text(await call(bob, "delete_schedule", schedule_id=schedule_id))
        assert f"bob may not delete schedule {schedule_id}" in foreign and "alice" in foreign
        paused = data(await call(alice, "update_schedule", schedule_id=schedule_id, enabled=False))
        assert paused["enabled"] is False and paused["next_fire_at"] is None
        assert data(await call(bob, "get_upcoming_executions"))["executions"] == []
        moved = data(
            await call(
                alice, "update_schedule", schedule_id=schedule_id, cron="30 4 * * 1", enabled=True
            )
        )
        assert moved["cron"] == "30 4 * * 1" and moved["next_fire_at"] is not None
        deleted = data(await call(alice, "delete_schedule", schedule_id=schedule_id))
        assert deleted["schedule_id"] == schedule_id and deleted["next_fire_at"] is None
        gone = error_text(await call(alice, "delete_schedule", schedule_id=schedule_id))
        assert schedule_id in gone and "list_scheduled_workflows" in gone
        assert data(await call(alice, "list_scheduled_workflows"))["schedules"] == []


@MODES
async def test_an_invalid_schedule_lists_every_problem_and_saves_nothing(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        text = error_text(
            await call(
                client,
                "schedule_workflow",
                workflow_name="deploy",
                cron="61 * * *",
                timezone="Mars/Olympus",
                parameters={"host": "Bad Host!"},
            )
        )
        assert "nothing was saved" in text
        assert "cron" in text and "timezone" in text and "parameters.host" in text
        unknown = error_text(
            await call(client, "schedule_workflow", workflow_name="helo", cron="0 3 * * *")
        )
        assert "did you mean 'hello'" in unknown
        bad_policy = error_text(
            await call(
                client,
                "schedule_workflow",
                workflow_name="hello",
                cron="0 3 * * *",
                overlap_policy="sometimes",
            )
        )
        assert "overlap_policy" in bad_policy
        assert data(await call(client, "list_scheduled_workflows"))["schedules"] == []
        missing = error_text(
            await call(client, "update_schedule", schedule_id="sch_nope", enabled=False)
        )
        assert "sch_nope" in missing and "list_scheduled_workflows" in missing
        too_far = error_text(await call(client, "get_upcoming_executions", hours_ahead=0))
        assert "hours_ahead" in too_far


@MODES
async def test_schedule_tools_carry_their_annotations(
    server: MCPServer[AppState], mode: str
) -> None:
    async with Client(server, mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name in ("list_scheduled_workflows", "get_upcoming_executions", "get_workflow_targets"):
        assert tools[name].annotations is not None
        assert tools[name].annotations.read_only_hint is True, name
    delete = tools["delete_schedule"].annotations
    assert delete is not None and (delete.read_only_hint, delete.destructive_hint) == (False, True)
    create = tools["schedule_workflow"].annotations
    assert create is not None and create.destructive_hint is False
    overlap = tools["schedule_workflow"].input_schema
    assert "cancel_previous" in str(overlap) and "run_once" in str(overlap)  # enums


@pytest.fixture
def fleet_server(tmp_path: Path) -> MCPServer[AppState]:
    """A server wired like ``opsgate serve`` (Runtime.open) with an inventory file."""
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "blueprints" / "fleet.yaml").write_text(FLEET)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'opsgate.db'}",
        blueprints=tmp_path / "blueprints",
        policies=tmp_path / "policies",
        inventory=tmp_path / "inventory.yaml",
        principal="alice",
    )
    return create_server(settings)


@MODES
async def test_get_workflow_targets_explains_the_selection_and_names_close_matches(
    fleet_server: MCPServer[AppState], mode: str
) -> None:
    async with Client(fleet_server, mode=mode) as client:
        found = data(await call(client, "get_workflow_targets", workflow_name="fleet"))
        assert found["selector"] == "group:web" and found["selected"] == ["web-1", "web-2"]
        choices = {t["name"]: t for t in found["targets"]}
        assert list(choices) == ["web-1", "web-2", "db-1"]
        assert choices["db-1"]["selected"] is False and choices["db-1"]["reasons"]
        assert choices["web-1"]["labels"] == {"env": "prod"}
        one = data(
            await call(
                client, "get_workflow_targets", workflow_name="fleet", parameters={"hosts": "db-1"}
            )
        )
        assert one["selected"] == ["db-1"]
        typo = error_text(
            await call(
                client, "get_workflow_targets", workflow_name="fleet", parameters={"hosts": "web-3"}
            )
        )
        assert "web-3" in typo and "did you mean" in typo and "get_workflow_targets" in typo
        bad = error_text(
            await call(
                client, "get_workflow_targets", workflow_name="fleet", parameters={"hosts": 5}
            )
        )
        assert "hosts" in bad
        unknown = error_text(await call(client, "get_workflow_targets", workflow_name="flet"))
        assert "did you mean 'fleet'" in unknown

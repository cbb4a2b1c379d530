"""The action registry: built-ins, lookups, implementations, and plugins from entry points."""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.actions import ActionInfo, ActionRegistry, builtin_actions, run_action
from opsgate.actions.control import AssertAction, LogAction, WaitAction, WaitArguments
from opsgate.actions.scripted import ScriptedAction, ScriptedArguments
from opsgate.errors import NotFoundError, StepError
from opsgate.spec.blueprints import parse_blueprint
from tests.actions.contexts import Recorder

pytestmark = pytest.mark.anyio

BLUEPRINT = """\
name: scripted_run
version: "1"
steps:
  - {id: a, action: scripted, with: {outcomes: [{succeed: {n: 1}}]}}
"""


def test_builtin_actions_are_each_implemented_by_their_action() -> None:
    actions = builtin_actions()
    assert all(info.implementation.name == name for name, info in actions.items())
    assert isinstance(actions["wait"].implementation, WaitAction)
    assert isinstance(actions["assert"].implementation, AssertAction)
    assert isinstance(actions["log"].implementation, LogAction)
    assert actions["wait"] == ActionInfo(
        "wait",
        WaitArguments,
        False,
        "wait a fixed time or until a condition holds",
        actions["wait"].implementation,
        needs_target=False,
    )


def test_an_action_info_is_read_from_the_action() -> None:
    action = ScriptedAction("scripted.target", changes_things=False, needs_target=True)
    info = ActionInfo.of(action)
    assert (info.name, info.arguments, info.changes_things, info.needs_target) == (
        "scripted.target",
        ScriptedArguments,
        False,
        True,
    )
    assert info.description == ScriptedAction.description and info.implementation is action


def test_looking_up_an_unknown_action_suggests_close_names() -> None:
    registry = ActionRegistry.builtin()
    assert registry.get("wait").implementation is not None
    with pytest.raises(NotFoundError, match=r"action 'wiat' not found; did you mean 'wait'\?"):
        registry.get("wiat")
    assert "wait" in registry and "wiat" not in registry


def test_the_implementation_of_a_built_in_action() -> None:
    assert isinstance(ActionRegistry.builtin().implementation("log"), LogAction)


def test_the_implementation_of_an_unknown_action_is_a_step_error_with_suggestions() -> None:
    with pytest.raises(StepError) as raised:
        ActionRegistry.builtin().implementation("asert")
    assert raised.value.error_type == "ActionUnavailable" and not raised.value.retryable
    assert "action 'asert' not found; did you mean 'assert'?" in str(raised.value)
    assert "install the plugin that provides it" in str(raised.value)


def test_with_actions_returns_a_new_registry_with_the_extra_implementations() -> None:
    builtin = ActionRegistry.builtin()
    scripted, undo = ScriptedAction(), ScriptedAction("scripted.undo")
    registry = builtin.with_actions(scripted, undo)
    assert registry.implementation("scripted") is scripted
    assert registry.implementation("scripted.undo") is undo
    assert "scripted" not in builtin
    assert set(registry.infos()) == set(builtin.infos()) | {"scripted", "scripted.undo"}


def test_with_actions_replaces_an_action_of_the_same_name() -> None:
    fake_ssh = ScriptedAction("ssh", needs_target=True)
    registry = ActionRegistry.builtin().with_actions(fake_ssh)
    assert registry.implementation("ssh") is fake_ssh
    assert registry.get("ssh").arguments is ScriptedArguments


def test_the_blueprint_validator_accepts_the_actions_of_a_registry() -> None:
    registry = ActionRegistry.builtin().with_actions(ScriptedAction())
    spec, issues = parse_blueprint(BLUEPRINT, "scripted.yaml", registry.infos())
    assert spec is not None and issues == []
    spec, issues = parse_blueprint(BLUEPRINT, "scripted.yaml", builtin_actions())
    assert spec is None and [issue.message for issue in issues] == ["unknown action 'scripted'"]


PLUGIN = """\
from typing import Any

from opsgate.actions import Action, ActionArguments, StepContext


class PingArguments(ActionArguments):
    host: str


class PingAction(Action[PingArguments]):
    name = "ping"
    arguments = PingArguments
    changes_things = False
    description = "pretend to ping a host"
    needs_target = True

    async def run(self, args: PingArguments, ctx: StepContext) -> dict[str, Any]:
        return {"pong": args.host, "attempt": ctx.attempt}


class AlsoPing(PingAction):
    description = "a second action called ping"


class WaitImpostor(PingAction):
    name = "wait"


class Unfinished(Action[PingArguments]):
    name = "unfinished"
    arguments = PingArguments
    changes_things = False
    description = "never implements run"


class Fragile(PingAction):
    name = "fragile"

    def __init__(self) -> None:
        raise RuntimeError("no configuration found")


class Nameless(PingAction):
    name = ""
    arguments = dict


class NotAnAction:
    pass
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A distribution on ``sys.path`` whose ``opsgate.actions`` entry points name good and
    broken actions in a module of its own; returns the module's name."""
    module = f"opsgate_test_plugin_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    (site / "opsgate_test_plugin-1.0.dist-info").mkdir(parents=True)
    (site / f"{module}.py").write_text(PLUGIN)
    (site / "opsgate_test_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: opsgate-test-plugin\nVersion: 1.0\n"
    )
    (site / "opsgate_test_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        textwrap.dedent(f"""\
            [opsgate.actions]
            ping = {module}:PingAction
            ping_again = {module}:AlsoPing
            wait = {module}:WaitImpostor
            unfinished = {module}:Unfinished
            fragile = {module}:Fragile
            nameless = {module}:Nameless
            not_an_action = {module}:NotAnAction
            missing_module = {module}_gone:Thing

            [console_scripts]
            unrelated = {module}:PingAction
        """)
    )
    monkeypatch.syspath_prepend(str(site))
    yield module
    sys.modules.pop(module, None)


async def test_plugins_from_entry_points_join_the_built_in_actions(plugins: str) -> None:
    registry = ActionRegistry.load()
    assert set(registry.infos()) == set(builtin_actions()) | {"ping"}
    info = registry.get("ping")
    assert (info.needs_target, info.changes_things) == (True, False)
    context = Recorder().context(attempt=2)
    outputs = await run_action(registry.implementation("ping"), {"host": "web-1"}, context)
    assert outputs == {"pong": "web-1", "attempt": 2}


def test_broken_plugins_are_logged_and_skipped_with_the_reason(
    plugins: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="opsgate.actions.registry"):
        registry = ActionRegistry.load()
    module = plugins
    assert dict(registry.skipped) == {
        "ping_again": "its action 'ping' is already provided by entry point 'ping'",
        "wait": "its action 'wait' is already provided by opsgate",
        "unfinished": f"TypeError: {module}:Unfinished does not implement run()",
        "fragile": "RuntimeError: no configuration found",
        "nameless": f"TypeError: {module}:Nameless lacks valid attributes: name, arguments "
        "(name and description: text; changes_things, needs_target: booleans; arguments: a "
        "subclass of opsgate.actions.ActionArguments)",
        "not_an_action": f"TypeError: {module}:NotAnAction is not a subclass of "
        "opsgate.actions.Action",
        "missing_module": f"ModuleNotFoundError: No module named '{module}_gone'",
    }
    assert isinstance(registry.implementation("wait"), WaitAction)
    warnings = {record.getMessage() for record in caplog.records}
    assert (
        f"skipped action plugin 'fragile' ({module}:Fragile): RuntimeError: no configuration found"
        in warnings
    )
    assert len(warnings) == len(registry.skipped)
    assert registry.with_actions(ScriptedAction()).skipped == registry.skipped


def test_without_plugins_the_registry_holds_the_built_in_actions() -> None:
    registry = ActionRegistry.load()
    assert set(registry.infos()) == set(builtin_actions()) and not registry.skipped

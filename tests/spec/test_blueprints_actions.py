"""The action registry and the argument models the blueprint validator checks ``with:`` against."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from opsgate.actions import builtin_actions
from opsgate.actions.control import WaitArguments
from opsgate.actions.health import HealthCheckArguments
from opsgate.actions.http import HTTPArguments
from opsgate.actions.ipmi import IPMIArguments
from opsgate.actions.shell import ShellArguments

ACTIONS = builtin_actions()


def _refused(model: type[BaseModel], arguments: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(arguments)
    return str(raised.value)


def test_the_registry_holds_the_design_step_types() -> None:
    assert set(ACTIONS) == {
        "shell",
        "ssh",
        "ssh.upload",
        "ssh.download",
        "http",
        "ipmi",
        "health_check",
        "wait",
        "assert",
        "log",
        "workflow",
    }
    assert {name for name, info in ACTIONS.items() if info.needs_target} == {
        "ssh",
        "ssh.upload",
        "ssh.download",
        "ipmi",
    }


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_every_action_documents_itself_and_forbids_unknown_arguments(name: str) -> None:
    info = ACTIONS[name]
    assert info.name == name and info.description and "\n" not in info.description
    assert info.arguments.model_config.get("extra") == "forbid"
    undocumented = [f for f, field in info.arguments.model_fields.items() if not field.description]
    assert undocumented == []


def test_argv_words_may_be_written_as_numbers() -> None:
    assert ShellArguments.model_validate({"argv": ["sleep", 5]}).argv == ("sleep", "5")
    assert "needs exactly one of 'argv' and 'command'" in _refused(ShellArguments, {})


def test_http_statuses_are_codes_or_ranges() -> None:
    arguments = HTTPArguments.model_validate(
        {"url": "https://x", "expect_status": [204, "200-299", " 300 - 399 "]}
    )
    assert arguments.expect_status == (204, "200-299", " 300 - 399 ")
    assert arguments.timeout == timedelta(seconds=30) and arguments.method == "GET"
    for status in (99, 600, "300-200", "2xx", True):
        assert "must be an HTTP status" in _refused(
            HTTPArguments, {"url": "https://x", "expect_status": [status]}
        )


def test_http_credentials_are_references_of_one_kind() -> None:
    bearer = {"url": "https://x", "auth": {"token": "env:TOKEN"}}
    basic = {"url": "https://x", "auth": {"type": "basic", "username": "u", "password": "file:p"}}
    HTTPArguments.model_validate(bearer)
    HTTPArguments.model_validate(basic)
    assert "secret reference" in _refused(
        HTTPArguments, {"url": "https://x", "auth": {"token": "x"}}
    )
    assert "needs 'username' and 'password'" in _refused(
        HTTPArguments, {"url": "https://x", "auth": {"type": "basic", "username": "u"}}
    )
    assert "several bodies (json, body)" in _refused(
        HTTPArguments, {"url": "https://x", "json": {}, "body": "b"}
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"operation": "power_status"},
        {"operation": "power_cycle", "wait": False},
        {"operation": "set_boot_device", "boot_device": "network", "persistent": True},
        {"operation": "set_lan_config", "ip_address": "10.0.0.5", "netmask": "255.255.255.0"},
        {"operation": "set_lan_config", "ip_source": "dhcp"},
        {"operation": "get_sensors"},
    ],
)
def test_ipmi_operations_take_their_own_arguments(arguments: dict[str, Any]) -> None:
    assert IPMIArguments.model_validate(arguments).operation == arguments["operation"]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"operation": "power_status", "wait": True}, "does not take: wait"),
        ({"operation": "set_boot_device"}, "needs 'boot_device'"),
        ({"operation": "set_lan_config", "ip_address": "10.0.0.5"}, "needs 'ip_address' and"),
        ({"operation": "set_lan_config", "ip_address": "10.0.0.300", "netmask": "x"}, "IPv4"),
        ({"operation": "set_lan_config", "ip_source": "dhcp", "ip_address": "10.0.0.5"}, "dhcp"),
        ({"operation": "explode"}, "power_status"),
    ],
)
def test_ipmi_refuses_arguments_that_do_not_fit(arguments: dict[str, Any], problem: str) -> None:
    assert problem in _refused(IPMIArguments, arguments)


def test_health_checks_need_what_their_kind_probes() -> None:
    HealthCheckArguments.model_validate({"url": "http://x/healthz"})
    HealthCheckArguments.model_validate({"kind": "tcp", "host": "db", "port": 5432})
    assert "of kind tcp needs host, port" in _refused(HealthCheckArguments, {"kind": "tcp"})
    assert "takes no url" in _refused(
        HealthCheckArguments, {"kind": "tcp", "host": "db", "port": 1, "url": "http://x"}
    )


def test_wait_takes_a_duration_or_a_condition() -> None:
    assert WaitArguments.model_validate({"duration": "90s"}).duration == timedelta(seconds=90)
    assert WaitArguments.model_validate({"until": "now.hour > 6"}).interval == timedelta(seconds=10)
    assert "exactly one of 'duration' and 'until'" in _refused(
        WaitArguments, {"duration": "1s", "until": "true"}
    )

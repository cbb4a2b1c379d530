"""The ``ipmi`` action with the real pyghmi client against a real BMC simulator (ipmi_sim)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from opsgate.actions import run_action
from opsgate.actions.ipmi import IPMIAction
from opsgate.errors import StepError
from tests.actions.contexts import Recorder
from tests.peers.ipmi_sim import SimulatedBMC, free_port, simulated_bmc

pytestmark = pytest.mark.anyio

IPMI = IPMIAction()


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[SimulatedBMC]:
    with simulated_bmc(tmp_path) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPMI_TEST_PASSWORD", "bmc-secret-7Hq")


def _target(port: int, password: str = "env:IPMI_TEST_PASSWORD") -> dict[str, Any]:
    bmc = {"port": port, "user": "admin", "password": password}
    return {"name": "node-1", "address": "127.0.0.1", "bmc": bmc}


async def _ipmi(port: int, arguments: dict[str, Any], **target: Any) -> dict[str, Any]:
    context = Recorder().context(target=_target(port, **target))
    return await run_action(IPMI, arguments, context)


async def test_power_on_off_and_cycle_wait_for_the_new_state(bmc: SimulatedBMC) -> None:
    assert await _ipmi(bmc.port, {"operation": "power_status"}) == {
        "operation": "power_status",
        "power": "off",
    }
    assert (await _ipmi(bmc.port, {"operation": "power_on"}))["power"] == "on"
    assert (await _ipmi(bmc.port, {"operation": "power_status"}))["power"] == "on"
    assert (await _ipmi(bmc.port, {"operation": "power_cycle"}))["power"] == "on"
    assert (await _ipmi(bmc.port, {"operation": "power_off"}))["power"] == "off"
    assert (await _ipmi(bmc.port, {"operation": "power_status"}))["power"] == "off"


async def test_set_lan_config_provisions_the_bmc_address(bmc: SimulatedBMC) -> None:
    outputs = await _ipmi(
        bmc.port,
        {
            "operation": "set_lan_config",
            "ip_address": "10.0.0.5",
            "netmask": "255.255.255.0",
            "gateway": "10.0.0.1",
        },
    )
    assert outputs["lan"]["ipv4_address"] == "10.0.0.5/24"
    assert outputs["lan"]["ipv4_gateway"] == "10.0.0.1"
    assert outputs["lan"]["ipv4_configuration"] == "Static"


async def test_an_operation_the_bmc_refuses_is_a_permanent_error(bmc: SimulatedBMC) -> None:
    with pytest.raises(StepError) as raised:
        await _ipmi(bmc.port, {"operation": "set_boot_device", "boot_device": "network"})
    assert raised.value.error_type == "IPMIError" and not raised.value.retryable
    assert "refused the operation: Invalid data field in request" in str(raised.value)


async def test_a_wrong_password_is_a_permanent_error_without_the_password(
    bmc: SimulatedBMC, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPMI_TEST_PASSWORD", "wrong-bmc-pw-1")
    with pytest.raises(StepError) as raised:
        await _ipmi(bmc.port, {"operation": "power_status"})
    assert raised.value.error_type == "AuthenticationFailed" and not raised.value.retryable
    assert "refused the credentials of user 'admin'" in str(raised.value)
    assert "wrong-bmc-pw-1" not in str(raised.value)


async def test_a_silent_bmc_is_a_retryable_timeout() -> None:
    with pytest.raises(StepError) as raised:
        await _ipmi(free_port(socket.SOCK_DGRAM), {"operation": "power_status"})
    assert raised.value.error_type == "Timeout" and raised.value.retryable
    assert "did not answer" in str(raised.value)


async def test_cancellation_stops_waiting_for_the_bmc_at_once() -> None:
    with anyio.fail_after(2), anyio.move_on_after(0.2) as scope:
        await _ipmi(free_port(socket.SOCK_DGRAM), {"operation": "power_status"})
    assert scope.cancelled_caught


async def test_a_target_without_bmc_data_says_what_to_add() -> None:
    context = Recorder().context(target={"name": "node-1", "address": "127.0.0.1"})
    with pytest.raises(StepError, match="has no bmc section in the inventory") as raised:
        await run_action(IPMI, {"operation": "power_status"}, context)
    assert not raised.value.retryable

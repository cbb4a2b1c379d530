"""The ``ipmi`` action with the real pyghmi client against a real BMC simulator (ipmi_sim)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from opsgate.actions import run_action
from opsgate.actions.ipmi import IPMIAction
from opsgate.errors import StepError
from opsgate.lab.bmc import free_udp_port
from tests.actions.contexts import Recorder
from tests.peers.ipmi_sim import PRODUCT, TEMPERATURES, SimulatedBMC, simulated_bmc

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


async def test_get_lan_config_reads_the_factory_dhcp_then_a_committed_static_address(
    bmc: SimulatedBMC,
) -> None:
    lan_files = bmc.chassis.parent / "lan"
    factory = await _ipmi(bmc.port, {"operation": "get_lan_config"})
    assert factory == {
        "operation": "get_lan_config",
        "lan": {"ip_address": None, "netmask": None, "gateway": None, "ip_source": "dhcp"},
    }
    static = {"ip_address": "10.20.0.7", "netmask": "255.255.252.0", "gateway": "10.20.0.1"}
    await _ipmi(bmc.port, {"operation": "set_lan_config", **static})
    read = await _ipmi(bmc.port, {"operation": "get_lan_config"})
    assert read["lan"] == {**static, "ip_source": "static"}
    # Committed, so the BMC stored it (ipmi_sim hands committed settings to its LAN program).
    assert (lan_files / "ip_addr").read_text() == "10.20.0.7\n"
    assert (lan_files / "subnet_mask").read_text() == "255.255.252.0\n"
    await _ipmi(bmc.port, {"operation": "set_lan_config", "ip_source": "dhcp"})
    assert (await _ipmi(bmc.port, {"operation": "get_lan_config"})) == factory


async def test_a_lan_change_the_bmc_refuses_changes_nothing(bmc: SimulatedBMC) -> None:
    switch = bmc.chassis.parent / "faults" / "lan.set"
    switch.parent.mkdir()
    switch.write_text("flash busy\n")
    with pytest.raises(StepError) as raised:
        await _ipmi(
            bmc.port,
            {"operation": "set_lan_config", "ip_address": "10.0.0.5", "netmask": "255.0.0.0"},
        )
    assert raised.value.error_type == "IPMIError" and not raised.value.retryable
    lan = await _ipmi(bmc.port, {"operation": "get_lan_config"})
    assert lan["lan"]["ip_address"] is None and lan["lan"]["ip_source"] == "dhcp"


async def test_get_lan_config_takes_no_arguments() -> None:
    with pytest.raises(StepError, match="get_lan_config does not take: gateway"):
        await _ipmi(free_udp_port(), {"operation": "get_lan_config", "gateway": "10.0.0.1"})


async def test_reset_and_graceful_shutdown_reach_the_chassis(bmc: SimulatedBMC) -> None:
    assert (await _ipmi(bmc.port, {"operation": "power_on"}))["power"] == "on"
    assert (await _ipmi(bmc.port, {"operation": "power_reset"}))["power"] == "reset"
    assert bmc.chassis_state("reset") == "1"
    assert (await _ipmi(bmc.port, {"operation": "power_soft"}))["power"] == "off"
    assert bmc.chassis_state("shutdown") == "1"
    assert (await _ipmi(bmc.port, {"operation": "power_status"}))["power"] == "off"


# ipmi_sim's names for the boot devices its chassis control receives.
@pytest.mark.parametrize(
    ("device", "received"),
    [("network", "pxe"), ("hd", "default"), ("cdrom", "cdrom"), ("bios", "bios")],
)
@pytest.mark.parametrize("persistent", [False, True])
async def test_set_boot_device_reaches_the_bmc_for_next_or_every_boot(
    bmc: SimulatedBMC, device: str, received: str, persistent: bool
) -> None:
    arguments = {"operation": "set_boot_device", "boot_device": device, "persistent": persistent}
    assert await _ipmi(bmc.port, arguments) == {
        "operation": "set_boot_device",
        "boot_device": device,
        "persistent": persistent,
    }
    assert bmc.chassis_state("boot") == received


async def test_set_boot_device_default_clears_the_override(bmc: SimulatedBMC) -> None:
    await _ipmi(bmc.port, {"operation": "set_boot_device", "boot_device": "cdrom"})
    assert bmc.chassis_state("boot") == "cdrom"
    outputs = await _ipmi(bmc.port, {"operation": "set_boot_device", "boot_device": "default"})
    assert outputs["boot_device"] == "default" and not outputs["persistent"]
    assert bmc.chassis_state("boot") == "none"


async def test_a_boot_device_the_bmc_refuses_is_a_permanent_error(bmc: SimulatedBMC) -> None:
    # ipmi_sim knows no "safe mode" boot device: it answers with an IPMI error.
    with pytest.raises(StepError) as raised:
        await _ipmi(bmc.port, {"operation": "set_boot_device", "boot_device": "safe"})
    assert raised.value.error_type == "IPMIError" and not raised.value.retryable
    assert str(raised.value).endswith("refused the operation: Unspecified")
    assert bmc.chassis_state("boot") == "none"


async def test_get_sensors_reads_every_sensor_with_its_health(bmc: SimulatedBMC) -> None:
    outputs = await _ipmi(bmc.port, {"operation": "get_sensors"})
    assert outputs == {
        "operation": "get_sensors",
        "sensors": [
            {
                "name": "Inlet Temp",
                "value": float(TEMPERATURES["Inlet Temp"]),
                "units": "°C",
                "health": "ok",
                "states": [],
            },
            {
                "name": "CPU Temp",
                "value": float(TEMPERATURES["CPU Temp"]),
                "units": "°C",
                "health": "warning",
                "states": ["upper non-critical threshold"],
            },
            {
                "name": "Exhaust Temp",
                "value": float(TEMPERATURES["Exhaust Temp"]),
                "units": "°C",
                "health": "critical",
                "states": ["upper non-critical threshold", "upper critical threshold"],
            },
        ],
    }


async def test_get_fru_reads_the_system_inventory(bmc: SimulatedBMC) -> None:
    fru = (await _ipmi(bmc.port, {"operation": "get_fru"}))["fru"]
    assert fru["Manufacturer"] == PRODUCT["manufacturer"]
    assert fru["Product name"] == PRODUCT["product"]
    assert fru["Serial Number"] == PRODUCT["serial"]
    # Get Device ID data of the simulated BMC (mc_add), merged in by pyghmi.
    assert fru["Manufacturer ID"] == 0x1291 and fru["Product ID"] == 0xF02
    assert fru["UUID"] == "674523A1-AB89-EFCD-A123-456789ABCDEF"
    json.dumps(fru)  # plain JSON values only


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
        await _ipmi(free_udp_port(), {"operation": "power_status"})
    assert raised.value.error_type == "Timeout" and raised.value.retryable
    assert "did not answer" in str(raised.value)


async def test_cancellation_stops_waiting_for_the_bmc_at_once() -> None:
    with anyio.fail_after(2), anyio.move_on_after(0.2) as scope:
        await _ipmi(free_udp_port(), {"operation": "power_status"})
    assert scope.cancelled_caught


async def test_a_target_without_bmc_data_says_what_to_add() -> None:
    context = Recorder().context(target={"name": "node-1", "address": "127.0.0.1"})
    with pytest.raises(StepError, match="has no bmc section in the inventory") as raised:
        await run_action(IPMI, {"operation": "power_status"}, context)
    assert not raised.value.retryable

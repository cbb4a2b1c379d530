"""The stand-in ``fwutil`` (firmware inventory, updates, activation at the BMC's power-on) and
the fault switches of the stand-in tools, run as the lab's SSH commands run them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyghmi.ipmi.command import Command

from opsgate.lab.bmc import ipmi_sim, start_bmc, stop_bmc
from opsgate.lab.files import install_tools
from opsgate.lab.runner import boot_script
from opsgate.lab.state import LabHost
from tests.lab.processes import tool

FACTORY = [
    "bmc\t2.10.4\t2.14.1\t1",
    "bios\t1.4.2\t1.6.0\t2",
    "nic\t20.5.13\t22.0.9\t3",
    "raid\t51.16.0\t51.16.0\t4",
]


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    install_tools(tmp_path / "host")
    return tmp_path / "host"


def test_fwutil_lists_the_factory_firmware_and_updates_one_component(sandbox: Path) -> None:
    assert tool(sandbox, "fwutil", "list").stdout.splitlines() == FACTORY
    assert tool(sandbox, "fwutil", "status").stdout == "pending=none\noutdated=bmc,bios,nic\n"
    updated = tool(sandbox, "fwutil", "update", "bios")
    assert updated.stdout == "bios updated to 1.6.0; reboot to activate\n"
    assert tool(sandbox, "fwutil", "list").stdout.splitlines()[1] == "bios\t1.6.0\t1.6.0\t2"
    tool(sandbox, "fwutil", "update", "bmc")
    assert tool(sandbox, "fwutil", "status").stdout == "pending=bios,bmc\noutdated=nic\n"
    # Up to date already: nothing to flash, nothing pending.
    assert tool(sandbox, "fwutil", "update", "raid").stdout == "raid is already at 51.16.0\n"
    assert (sandbox / "firmware" / "pending").read_text() == "bios\nbmc\n"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["fwutil", "update", "gpu"], 1, "unknown component 'gpu'; known: bmc,bios,nic,raid"),
        (["fwutil", "update"], 2, "usage: fwutil list | update COMPONENT | status"),
        (["fwutil", "flash", "bios"], 2, "usage:"),
    ],
)
def test_fwutil_refusals_say_why(sandbox: Path, argv: list[str], code: int, message: str) -> None:
    refused = tool(sandbox, *argv)
    assert refused.returncode == code
    assert message in refused.stderr


@pytest.mark.parametrize("command", ["fwutil update bios", "biosutil import NEW"])
def test_a_fault_switch_refuses_its_subcommand_before_anything_changes(
    sandbox: Path, command: str
) -> None:
    (sandbox / "new.conf").write_text("BootMode=UEFI\n")
    argv = command.replace("NEW", str(sandbox / "new.conf")).split()
    tool(sandbox, "fwutil", "list")  # factory state on first use
    tool(sandbox, "biosutil", "get", "BootMode")
    state = {"fwutil": "firmware", "biosutil": "bios"}[argv[0]]
    before = {p: p.read_bytes() for p in (sandbox / state).rglob("*") if p.is_file()}
    switch = sandbox / "faults" / f"{argv[0]}.{argv[1]}"
    switch.parent.mkdir()
    switch.write_text("flash locked\n")
    refused = tool(sandbox, *argv)
    assert (refused.returncode, refused.stderr) == (1, f"{argv[0]}: injected fault: flash locked\n")
    assert {p: p.read_bytes() for p in (sandbox / state).rglob("*") if p.is_file()} == before
    # Other subcommands still work; removing the switch lifts the fault.
    read = ["status"] if argv[0] == "fwutil" else ["get", "BootMode"]
    assert tool(sandbox, argv[0], *read).returncode == 0
    switch.unlink()
    assert tool(sandbox, *argv).returncode == 0
    assert {p: p.read_bytes() for p in (sandbox / state).rglob("*") if p.is_file()} != before


@pytest.fixture
def server(tmp_path: Path, sandbox: Path) -> Iterator[tuple[Command, Path]]:
    """A BMC whose power-on boots the sandbox's host, as in the lab."""
    if ipmi_sim() is None:
        pytest.skip("ipmi_sim is not installed: make ipmi-sim")
    host = LabHost(
        name="srv-01",
        groups=["server"],
        ssh_port=1,
        sandbox=str(sandbox),
        command_log="/dev/null",
        maas_system_id="abc123",
    )
    folder = tmp_path / "bmc"
    process, port = start_bmc(folder, "srv-01", "admin", "pw-0123", on_boot=boot_script(host))
    try:
        yield Command(bmc="127.0.0.1", userid="admin", password="pw-0123", port=port), folder
    finally:
        stop_bmc(process.pid)
        process.wait()


def test_a_power_cycle_through_the_bmc_activates_pending_firmware(
    sandbox: Path, server: tuple[Command, Path]
) -> None:
    bmc, folder = server
    tool(sandbox, "fwutil", "update", "nic")
    assert tool(sandbox, "fwutil", "status").stdout.startswith("pending=nic\n")
    bmc.set_power("off", wait=True)
    assert tool(sandbox, "fwutil", "status").stdout.startswith("pending=nic\n")
    bmc.set_power("on", wait=True)
    assert tool(sandbox, "fwutil", "status").stdout == "pending=none\noutdated=bmc,bios\n"
    assert (folder / "chassis" / "power").read_text() == "1\n"

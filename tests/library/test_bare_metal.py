"""server_provisioning and batch_commissioning on the lab: MaaS, SSH hosts with biosutil and
fwutil, and a real BMC (ipmi_sim) per server.

Each test provisions its own servers (srv-01 ... srv-12), so the tests do not depend on each
other's leftovers; the batch tests use address ranges no other test assigns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from opsgate.lab import LabState
from tests.engine.rehearsal import most_running_at_once
from tests.library.harness import (
    ROOT,
    Library,
    commands,
    errors,
    fault,
    inject_fault,
    lab_host,
    lab_snapshot,
    sandbox,
    service_fault,
    step,
    tool,
)

pytestmark = pytest.mark.anyio

SERVERS = tuple(f"srv-{number:02d}" for number in range(1, 13))
LAB_HOSTS = tuple(f"{name}:server" for name in SERVERS)
TEMPLATES = YAML(typ="safe").load((ROOT / "blueprints/data/bios_templates.yaml").read_text())
LAN_SETTINGS = ("ip_addr_src", "ip_addr", "subnet_mask", "default_gw_ip_addr")


def lan(lab: LabState, name: str) -> dict[str, str]:
    """The BMC's stored LAN settings (what ipmi_sim committed)."""
    folder = Path(lab.directory) / "bmc" / name / "lan"
    return {item: (folder / item).read_text().strip() for item in LAN_SETTINGS}


def maas(lab: LabState, path: str) -> Any:
    key = Path(lab.maas_api_key_file).read_text().strip()
    answer = httpx.get(f"{lab.maas_url}{path}", headers={"Authorization": f"Bearer {key}"})
    answer.raise_for_status()
    return answer.json()


def example(lab: LabState, records: Path, **overrides: Any) -> dict[str, Any]:
    """The docs' example parameters, with the lab's MaaS URL and key."""
    return {
        "server": "srv-01",
        "device_type": "a1.c5.large",
        "target_ipmi_ip": "10.20.0.11",
        "netmask": "255.255.255.0",
        "gateway": "10.20.0.1",
        "maas_url": lab.maas_url,
        "maas_api_key": f"file:{lab.maas_api_key_file}",
        "record_dir": str(records),
        **overrides,
    }


def bios(lab: LabState, name: str) -> dict[str, str]:
    lines = (sandbox(lab, name) / "bios" / "settings").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


async def test_server_provisioning_succeeds_with_its_example_parameters(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    system_id = lab_host(lab, "srv-01").maas_system_id
    assert maas(lab, f"machines/{system_id}/")["status_name"] == "New"
    view = await library.run("server_provisioning", example(lab, tmp_path))
    assert view.status == "succeeded", errors(view)
    machine = maas(lab, f"machines/{system_id}/")
    assert (machine["status_name"], machine["tag_names"]) == ("Ready", ["provisioned"])
    assert bios(lab, "srv-01") == TEMPLATES["a1.c5.large"]
    assert lan(lab, "srv-01") == {
        "ip_addr_src": "static",
        "ip_addr": "10.20.0.11",
        "subnet_mask": "255.255.255.0",
        "default_gw_ip_addr": "10.20.0.1",
    }
    assert library.outputs(view.execution_id, "lan_verify")[0]["lan"] == {
        "ip_address": "10.20.0.11",
        "netmask": "255.255.255.0",
        "gateway": "10.20.0.1",
        "ip_source": "static",
    }
    # The record of the BIOS before: the factory settings, also kept on the server.
    record = (tmp_path / f"srv-01-{view.execution_id}.conf").read_text()
    assert record.startswith("BootMode=Legacy\n")
    assert (sandbox(lab, "srv-01") / "bios-backup" / f"{view.execution_id}.conf").read_text() == (
        record
    )
    # The firmware path was skipped, and nothing touched the firmware.
    skipped = {s.step_id for s in view.steps if s.status == "skipped"}
    assert {"preflight_power", "firmware_update", "firmware_reboot"} <= skipped
    assert not (sandbox(lab, "srv-01") / "firmware").exists()


async def test_firmware_first_flashes_by_priority_then_power_cycles(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    params = example(lab, tmp_path, server="srv-02", target_ipmi_ip="10.20.0.12")
    view = await library.run("server_provisioning", {**params, "firmware_first": True})
    assert view.status == "succeeded", errors(view)
    flashed = library.outputs(view.execution_id, "firmware_update")[0]["log"].splitlines()
    assert flashed == [
        "bmc updated to 2.14.1; reboot to activate",
        "bios updated to 1.6.0; reboot to activate",
        "nic updated to 22.0.9; reboot to activate",
    ]
    assert "fwutil-update bmc bios nic" in "\n".join(commands(lab, "srv-02"))
    assert tool(lab, "srv-02", "fwutil", "status").stdout == "pending=none\noutdated=none\n"
    assert (Path(lab.directory) / "bmc/srv-02/chassis/power").read_text() == "1\n"
    # Flash, then power cycle, then the check: in this order in the event log.
    order = [
        e.step_id
        for e in library.events(view.execution_id)
        if e.type == "step.succeeded"
        and e.step_id in {"firmware_update", "firmware_reboot", "firmware_check", "bios_push"}
    ]
    assert order == ["firmware_update", "firmware_reboot", "firmware_check", "bios_push"]
    assert bios(lab, "srv-02") == TEMPLATES["a1.c5.large"]


def _everything_but_commissioning(snapshot: dict[str, str], system_id: str) -> dict[str, str]:
    """A machine stays commissioned: MaaS has no "uncommission", so its status is left out
    (its tags are still compared)."""
    machine = snapshot.pop(f"maas:{system_id}")
    snapshot[f"maas-tags:{system_id}"] = machine.split(" ", 1)[1]
    return snapshot


async def test_a_lan_fault_rolls_back_the_bios_push(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    system_id = lab_host(lab, "srv-03").maas_system_id
    assert (
        tool(lab, "srv-03", "biosutil", "get", "BootMode").returncode == 0
    )  # the factory settings exist
    before = lab_snapshot(lab)
    with service_fault(lab, "bmc-srv-03.lan", "LAN settings locked"):
        params = example(lab, tmp_path, server="srv-03", target_ipmi_ip="10.20.0.13")
        view = await library.run("server_provisioning", params)
    assert view.status == "rolled_back", view
    # IPMI has no text for the BMC's reason, only a completion code.
    error = step(view, "lan_set").runs[0].error
    assert error["type"] == "IPMIError" and "refused the operation" in error["message"]
    assert step(view, "bios_push").status == "rolled_back"
    assert bios(lab, "srv-03")["BootMode"] == "Legacy"
    assert lan(lab, "srv-03")["ip_addr_src"] == "dhcp"
    after = lab_snapshot(lab)
    assert _everything_but_commissioning(after, system_id) == _everything_but_commissioning(
        before, system_id
    )


async def test_a_tagging_fault_rolls_back_the_bios_and_the_bmc_lan(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    system_id = lab_host(lab, "srv-04").maas_system_id
    assert tool(lab, "srv-04", "biosutil", "get", "BootMode").returncode == 0
    before = lab_snapshot(lab)
    factory_lan = lan(lab, "srv-04")
    with service_fault(lab, "maas.tag", "tag service down"):
        params = example(lab, tmp_path, server="srv-04", target_ipmi_ip="10.20.0.14")
        view = await library.run("server_provisioning", params)
    assert view.status == "rolled_back", view
    assert step(view, "lan_set").status == "rolled_back"
    assert lan(lab, "srv-04") == factory_lan
    assert bios(lab, "srv-04")["BootMode"] == "Legacy"
    after = lab_snapshot(lab)
    assert _everything_but_commissioning(after, system_id) == _everything_but_commissioning(
        before, system_id
    )


async def test_a_biosutil_fault_at_the_push_rolls_back_to_the_lab_as_it_was(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    system_id = lab_host(lab, "srv-10").maas_system_id
    assert tool(lab, "srv-10", "biosutil", "get", "BootMode").returncode == 0
    before = lab_snapshot(lab)
    switch = inject_fault(lab, "srv-10", "biosutil.import", "NVRAM write protected")
    try:
        params = example(lab, tmp_path, server="srv-10", target_ipmi_ip="10.20.0.20")
        view = await library.run("server_provisioning", params)
    finally:
        switch.unlink()
    assert view.status == "rolled_back", view
    error = step(view, "bios_push").runs[0].error
    assert "biosutil: injected fault: NVRAM write protected" in error["message"]
    assert step(view, "bios_backup").status == "rolled_back"  # the backup file is removed
    assert step(view, "lan_set").status == "pending"  # never reached
    after = lab_snapshot(lab)
    assert _everything_but_commissioning(after, system_id) == _everything_but_commissioning(
        before, system_id
    )


async def test_a_rejected_bios_push_changes_neither_bios_nor_bmc(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    assert tool(lab, "srv-05", "biosutil", "get", "BootMode").returncode == 0
    settings = bios(lab, "srv-05")
    params = example(lab, tmp_path, server="srv-05", target_ipmi_ip="10.20.0.15")
    view = await library.run("server_provisioning", params, reject=frozenset({"bios_push"}))
    assert view.status == "rolled_back", view
    assert bios(lab, "srv-05") == settings
    assert lan(lab, "srv-05")["ip_addr_src"] == "dhcp"
    assert not list((sandbox(lab, "srv-05") / "bios-backup").iterdir())


def batch(lab: LabState, records: Path, servers: tuple[str, ...], **overrides: Any) -> dict:
    return {
        "servers": list(servers),
        "device_type": "d1.c1.small",
        "ipmi_range_start": "10.30.0.10",
        "ipmi_range_end": "10.30.0.40",
        "gateway": "10.30.0.1",
        "max_parallel": 4,
        "maas_url": lab.maas_url,
        "maas_api_key": f"file:{lab.maas_api_key_file}",
        "record_dir": str(records),
        **overrides,
    }


async def test_a_batch_of_12_runs_4_at_a_time_with_12_unique_addresses(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    view = await library.run(
        "batch_commissioning",
        batch(lab, tmp_path, SERVERS, ipmi_range_start="10.30.0.100", ipmi_range_end="10.30.0.140"),
        within=240,
    )
    assert view.status == "succeeded", errors(view)
    events = library.events(view.execution_id)
    # Never more than max_parallel children at once, and really in parallel.
    assert 2 <= most_running_at_once(events, "provision") <= 4
    addresses = {name: lan(lab, name)["ip_addr"] for name in SERVERS}
    assert sorted(addresses.values()) == [f"10.30.0.{n}" for n in range(100, 112)]
    for name in SERVERS:
        assert bios(lab, name) == TEMPLATES["d1.c1.small"], name
        machine = maas(lab, f"machines/{lab_host(lab, name).maas_system_id}/")
        assert machine["status_name"] == "Ready" and "provisioned" in machine["tag_names"]


async def test_an_address_in_use_is_skipped(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    # srv-06's BMC already has 10.40.0.11 (a previous provisioning).
    first = await library.run(
        "server_provisioning",
        example(lab, tmp_path, server="srv-06", target_ipmi_ip="10.40.0.11", gateway="10.40.0.1"),
    )
    assert first.status == "succeeded", errors(first)
    params = batch(
        lab,
        tmp_path,
        ("srv-07", "srv-08", "srv-09"),
        ipmi_range_start="10.40.0.10",
        ipmi_range_end="10.40.0.13",
        gateway="10.40.0.1",
    )
    view = await library.run("batch_commissioning", params)
    assert view.status == "succeeded", errors(view)
    assert (
        library.outputs(view.execution_id, "assign")[0]["addresses"]
        == "10.40.0.10 10.40.0.12 10.40.0.13"
    )
    assert [lan(lab, name)["ip_addr"] for name in ("srv-07", "srv-08", "srv-09")] == [
        "10.40.0.10",
        "10.40.0.12",
        "10.40.0.13",
    ]


async def test_a_range_too_small_stops_the_batch_before_any_server(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    before = lab_snapshot(lab)
    params = batch(
        lab,
        tmp_path,
        ("srv-10", "srv-11", "srv-12"),
        ipmi_range_start="10.50.0.10",
        ipmi_range_end="10.50.0.11",
        gateway="10.50.0.1",
    )
    view = await library.run("batch_commissioning", params)
    assert view.status == "rolled_back", view  # its rollback plan's note ran; nothing to undo
    error = str(step(view, "assignment_check").runs[0].error)
    assert "the IPMI range 10.50.0.10 - 10.50.0.11 has only 2 free address(es)" in error
    assert "for 3 servers: widen the range or provision fewer servers" in error
    assert step(view, "provision").status != "succeeded"
    assert lab_snapshot(lab) == before


async def test_a_server_failing_in_a_batch_is_rolled_back_and_the_others_stay_provisioned(
    library: Library, lab: LabState, tmp_path: Path
) -> None:
    """Each server is its own execution: the one whose BIOS push fails rolls itself back to
    how it was; the batch then fails (over its failure budget) and leaves the servers that
    were provisioned as they are, by design."""
    servers = ("srv-05", "srv-06", "srv-07")
    assert tool(lab, "srv-06", "biosutil", "get", "BootMode").returncode == 0  # factory file
    before = lab_snapshot(lab)
    params = batch(
        lab,
        tmp_path,
        servers,
        ipmi_range_start="10.60.0.10",
        ipmi_range_end="10.60.0.20",
        gateway="10.60.0.1",
        max_failed_percentage=0,
    )
    with fault(lab, "srv-06", "biosutil.import", "NVRAM write protected"):
        view = await library.run("batch_commissioning", params)
    assert view.status == "rolled_back", errors(view)
    runs = {run.item_key: run.status for run in step(view, "provision").runs}
    assert sorted(runs.values()) == ["failed", "succeeded", "succeeded"], runs

    def of(server: str, snapshot: dict[str, str]) -> dict[str, str]:
        system_id = lab_host(lab, server).maas_system_id
        mine = (f"{server}:", f"bmc:{server}/")
        kept = {k: v for k, v in snapshot.items() if k.startswith(mine)}
        kept["tags"] = snapshot[f"maas:{system_id}"].split(" ", 1)[1]
        return kept

    after = lab_snapshot(lab)
    assert of("srv-06", after) == of("srv-06", before)
    template = TEMPLATES["d1.c1.small"]
    for server in ("srv-05", "srv-07"):
        assert lan(lab, server)["ip_addr"].startswith("10.60.0."), server
        assert {key: bios(lab, server)[key] for key in template} == template, server

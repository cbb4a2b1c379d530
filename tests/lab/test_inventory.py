"""The inventory the lab writes is one opsgate loads, with references instead of secrets."""

from __future__ import annotations

from pathlib import Path

from opsgate.inventory import load_inventory
from opsgate.lab.inventory import write_inventory
from opsgate.lab.state import LabHost


def host(name: str, groups: list[str], bmc_port: int | None) -> LabHost:
    return LabHost(
        name=name,
        groups=groups,
        ssh_port=2201,
        sandbox=f"/lab/hosts/{name}",
        command_log=f"/lab/logs/{name}.commands",
        maas_system_id="abc123",
        bmc_port=bmc_port,
    )


def test_lab_inventory_loads_and_selects_by_group(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    hosts = [host("web-1", ["web"], 6230), host("db-1", ["db"], None)]
    write_inventory(path, hosts, "http://127.0.0.1:8123")
    inventory = load_inventory(path)
    assert [t["name"] for t in inventory.select("group:web")] == ["web-1"]
    assert [t["name"] for t in inventory.select("group:bmc")] == ["web-1"]
    web = inventory.variables("web-1")
    assert web["ssh"]["port"] == 2201
    assert web["ssh"]["key"] == f"file:{tmp_path / 'keys/deploy'}"
    assert web["bmc"]["password"] == f"file:{tmp_path / 'secrets/bmc-password'}"
    assert web["labels"]["maas_system_id"] == "abc123"
    assert web["labels"]["health_url"] == "http://127.0.0.1:8123/healthz"
    assert inventory.variables("db-1")["bmc"] is None

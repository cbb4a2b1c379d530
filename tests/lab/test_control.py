"""What ``lab up`` and ``lab status`` print about a lab, without starting one."""

from __future__ import annotations

from opsgate.lab.bmc import MISSING
from opsgate.lab.control import describe, hints
from opsgate.lab.state import LabHost, LabState


def lab(bmc_port: int | None, bmc_note: str | None) -> LabState:
    host = LabHost(
        name="web-1",
        groups=["web"],
        ssh_port=2201,
        sandbox="/lab/hosts/web-1",
        command_log="/lab/logs/web-1.commands",
        maas_system_id="abc123",
        bmc_port=bmc_port,
    )
    return LabState(
        pid=1,
        directory="/lab",
        inventory="/lab/inventory.yaml",
        known_hosts="/lab/known_hosts",
        hosts=[host],
        maas_url="http://127.0.0.1:5240/MAAS/api/2.0/",
        maas_api_key_file="/lab/secrets/maas-api-key",
        health_url="http://127.0.0.1:8080",
        bmc_note=bmc_note,
    )


def test_status_names_each_service_and_its_port() -> None:
    rows = describe(lab(bmc_port=6230, bmc_note=None))
    assert [row[:2] for row in rows] == [
        ("ssh web-1", "127.0.0.1:2201"),
        ("bmc web-1", "127.0.0.1:6230/udp"),
        ("maas", "http://127.0.0.1:5240/MAAS/api/2.0/"),
        ("http", "http://127.0.0.1:8080/healthz"),
    ]


def test_status_says_why_bmcs_are_missing() -> None:
    rows = describe(lab(bmc_port=None, bmc_note=MISSING))
    assert ("bmc", "-", f"not started: {MISSING}") in rows
    assert "make ipmi-sim" in MISSING


def test_hints_show_the_inventory_and_a_blueprint_to_run() -> None:
    shown = "\n".join(hints(lab(bmc_port=None, bmc_note=None)))
    assert "OPSGATE_INVENTORY=/lab/inventory.yaml opsgate run disk_usage_report" in shown
    assert "base_url=http://127.0.0.1:8080" in shown
    assert "$(cat /lab/secrets/maas-api-key)" in shown

"""``security_audit`` end to end on the lab: clean hosts pass, seeded problems are found.

The tests seed files into the sandboxes (a good or bad ``etc/ssh/sshd_config``, a
world-writable file, a ``.ssh`` folder) and remove them afterwards; the audit itself must
change nothing (``lab_snapshot`` before and after). The report is read from the lab's hook sink.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.lab import LabState
from tests.library.harness import Library, errors, hook_url, lab_snapshot, step

pytestmark = pytest.mark.anyio

LAB_HOSTS = ("web-1:web", "db-1:db")

GOOD_SSHD = "# hardened\nPermitRootLogin no\nPasswordAuthentication no\n"


@pytest.fixture
def seeded(lab: LabState) -> Iterator[dict[str, Path]]:
    """Every host with a hardened sshd_config; whatever a test adds under the returned
    sandboxes in ``etc/``, ``.ssh/`` or ``audit-*`` is removed afterwards."""
    sandboxes = {host.name: Path(host.sandbox) for host in lab.hosts}
    for root in sandboxes.values():
        (root / "etc" / "ssh").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "ssh" / "sshd_config").write_text(GOOD_SSHD)
    try:
        yield sandboxes
    finally:
        for root in sandboxes.values():
            for made in [root / "etc", root / ".ssh", *root.glob("audit-*")]:
                if made.is_dir():
                    shutil.rmtree(made)
                elif made.exists():
                    made.unlink()


@pytest.fixture
async def sink(lab: LabState) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=lab.health_url, timeout=5) as client:
        yield client
        await client.delete("/hooks/audit")


async def posted_report(sink: httpx.AsyncClient) -> dict[str, Any]:
    received = (await sink.get("/hooks/audit")).json()
    assert received["count"] == 1, received
    report: dict[str, Any] = received["deliveries"][0]["body"]
    return report


def host_report(report: dict[str, Any], host: str) -> dict[str, Any]:
    return next(h for h in report["hosts"] if h["host"] == host)


def checks(report: dict[str, Any], host: str) -> set[tuple[str, str]]:
    return {(f["severity"], f["check"]) for f in host_report(report, host)["findings"]}


async def test_clean_hosts_pass_and_the_report_is_posted(
    library: Library, lab: LabState, seeded: dict[str, Path], sink: httpx.AsyncClient
) -> None:
    before = lab_snapshot(lab)
    params = {"hosts": "*", "report_url": hook_url(lab, "audit"), "fail_on_findings": True}
    view = await library.run("security_audit", params)
    assert view.status == "succeeded", errors(view)
    report = await posted_report(sink)
    assert report["verdict"] == "pass" and report["execution"] == view.execution_id
    assert [h["host"] for h in report["hosts"]] == ["web-1", "db-1"]
    for host in report["hosts"]:
        assert host["findings"] == [] and host["verdict"] == "pass"
        assert isinstance(host["listeners"], list) and host["listeners"]
        assert set(host["packages"]) | set(host["packages_not_installed"]) == {
            "openssh-server",
            "openssl",
            "sudo",
        }
    delivery = (await sink.get("/hooks/audit")).json()["deliveries"][0]
    assert delivery["headers"]["x-opsgate-verdict"] == "pass"
    # Read-only: every sandbox file is as it was.
    assert lab_snapshot(lab) == before


async def test_a_world_writable_file_and_a_bad_sshd_config_are_found(
    library: Library, lab: LabState, seeded: dict[str, Path], sink: httpx.AsyncClient
) -> None:
    loose = seeded["web-1"] / "audit-loose.conf"
    loose.write_text("token=1\n")
    loose.chmod(0o666)
    (seeded["db-1"] / "etc/ssh/sshd_config").write_text(
        "PermitRootLogin yes\n#PasswordAuthentication no\n"
    )
    before = lab_snapshot(lab)
    view = await library.run("security_audit", {"report_url": hook_url(lab, "audit")})
    # fail_on_findings is false by default: the report is the product.
    assert view.status == "succeeded", errors(view)
    report = await posted_report(sink)
    assert report["verdict"] == "fail" and report["critical"] == 2
    web = host_report(report, "web-1")
    assert web["verdict"] == "fail"
    assert web["findings"] == [
        {
            "severity": "critical",
            "check": "world_writable",
            "detail": "./audit-loose.conf is writable by everyone",
        }
    ]
    assert checks(report, "db-1") == {
        ("critical", "permit_root_login"),
        ("high", "password_authentication"),
    }
    assert lab_snapshot(lab) == before


async def test_critical_findings_fail_the_run_when_asked_after_posting_the_report(
    library: Library, lab: LabState, seeded: dict[str, Path], sink: httpx.AsyncClient
) -> None:
    (seeded["db-1"] / "etc/ssh/sshd_config").write_text("PermitRootLogin yes\n")
    params = {"hosts": "db-1", "report_url": hook_url(lab, "audit"), "fail_on_findings": True}
    view = await library.run("security_audit", params)
    assert view.status == "failed", errors(view)
    message = step(view, "verdict").runs[0].error["message"]  # type: ignore[index]
    assert "1 critical finding(s): db-1: permit_root_login:" in message
    assert (await posted_report(sink))["verdict"] == "fail"


async def test_ssh_dir_permissions_and_a_missing_sshd_config_are_reported(
    library: Library, lab: LabState, seeded: dict[str, Path], sink: httpx.AsyncClient
) -> None:
    ssh = seeded["web-1"] / ".ssh"
    ssh.mkdir()
    ssh.chmod(0o755)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAA test\n")
    (ssh / "authorized_keys").chmod(0o664)
    (ssh / "id_ed25519").write_text("private\n")
    (ssh / "id_ed25519").chmod(0o644)
    (ssh / "id_ed25519.pub").write_text("public\n")
    (ssh / "id_ed25519.pub").chmod(0o644)
    (seeded["db-1"] / "etc/ssh/sshd_config").unlink()
    view = await library.run("security_audit", {"report_url": hook_url(lab, "audit")})
    assert view.status == "succeeded", errors(view)
    report = await posted_report(sink)
    assert checks(report, "web-1") == {
        ("high", "ssh_dir_permissions"),
        ("critical", "ssh_file_writable"),
        ("critical", "private_key_readable"),
    }
    assert host_report(report, "db-1")["verdict"] == "warn"
    assert checks(report, "db-1") == {("high", "sshd_config_missing")}

"""``opsgate lab up | status | down`` as real processes, and opsgate running against the lab."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest

from opsgate import __version__
from opsgate.lab.state import LOCK_FILE, LabState
from tests.lab.processes import lab_up, opsgate

ROOT = Path(__file__).resolve().parents[2]


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    directory = tmp_path_factory.mktemp("lab") / ".lab"
    state = lab_up(directory, "--commission-seconds", "0")
    yield state
    opsgate("lab", "down", "--dir", str(directory), cwd=directory.parent)


def test_up_prints_how_to_use_the_lab(tmp_path: Path) -> None:
    directory = tmp_path / ".lab"
    started = opsgate("lab", "up", "--dir", str(directory), "--host", "app-1:web+app", cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stderr
        assert "OPSGATE_INVENTORY=.lab/inventory.yaml opsgate run" in started.stdout
        assert "ssh app-1" in started.stdout
        state = LabState.model_validate_json((directory / "state.json").read_text())
        assert [(h.name, h.groups) for h in state.hosts] == [("app-1", ["web", "app"])]
    finally:
        opsgate("lab", "down", "--dir", str(directory), cwd=tmp_path)


def test_a_bundled_blueprint_runs_against_the_lab(lab: LabState, tmp_path: Path) -> None:
    ran = opsgate(
        "run",
        "disk_usage_report",
        "-p",
        "hosts=*",
        "--json",
        cwd=ROOT,
        OPSGATE_INVENTORY=lab.inventory,
        OPSGATE_DATABASE_URL=f"sqlite:///{tmp_path / 'opsgate.db'}",
    )
    assert ran.returncode == 0, ran.stderr
    view = json.loads(ran.stdout)
    assert view["status"] == "succeeded"
    measured = next(step for step in view["steps"] if step["step_id"] == "measure")
    assert sorted(run["target"] for run in measured["runs"]) == sorted(h.name for h in lab.hosts)
    for host in lab.hosts:
        commands = Path(host.command_log).read_text().splitlines()
        assert "df --output=pcent /" in commands, host.name


def test_the_http_health_probe_blueprint_reads_the_lab_services_version(
    lab: LabState, tmp_path: Path
) -> None:
    ran = opsgate(
        "run",
        "http_health_probe",
        "-p",
        f"base_url={lab.health_url}",
        "-p",
        f"expected_version={__version__}",
        "--json",
        cwd=ROOT,
        OPSGATE_INVENTORY=lab.inventory,
        OPSGATE_DATABASE_URL=f"sqlite:///{tmp_path / 'opsgate.db'}",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    view = json.loads(ran.stdout)
    assert view["status"] == "succeeded"
    check = next(step for step in view["steps"] if step["step_id"] == "check_version")
    assert check["status"] == "succeeded"  # the version was read and compared, not skipped


@pytest.mark.anyio
async def test_commands_run_in_the_sandbox_with_the_stand_in_tools(lab: LabState) -> None:
    host = lab.hosts[0]
    async with asyncssh.connect(
        "127.0.0.1",
        host.ssh_port,
        username="deploy",
        client_keys=[str(Path(lab.directory) / "keys" / "deploy")],
        known_hosts=lab.known_hosts,
    ) as connection:
        created = await connection.run("ctr create web nginx:1 && ctr start web && pwd")
        refused = await connection.run("ctr rm web")
    assert created.exit_status == 0, created.stderr
    assert str(created.stdout).splitlines()[-1] == host.sandbox
    assert (Path(host.sandbox) / "containers" / "web" / "state").read_text() == "running\n"
    assert refused.exit_status == 1
    assert "is running: ctr stop web first" in str(refused.stderr)


def test_the_maas_api_commissions_and_tags_a_machine(lab: LabState) -> None:
    key = Path(lab.maas_api_key_file).read_text()
    system_id = lab.hosts[1].maas_system_id
    with httpx.Client(
        base_url=lab.maas_url, headers={"Authorization": f"Bearer {key}"}, timeout=5
    ) as maas:
        assert maas.post(f"machines/{system_id}/", params={"op": "commission"}).status_code == 200
        maas.post("tags/", data={"name": "web-tier"}).raise_for_status()
        maas.post("tags/web-tier/", data={"op": "update_nodes", "add": system_id})
        machine = maas.get(f"machines/{system_id}/").json()
    assert machine["hostname"] == lab.hosts[1].name
    assert machine["status_name"] == "Ready"
    assert machine["ip_addresses"] == ["127.0.0.1"]
    assert machine["tag_names"] == ["web-tier"]


def test_the_health_service_answers(lab: LabState) -> None:
    assert httpx.get(f"{lab.health_url}/healthz").json() == {"status": "ok"}


def test_the_inventory_holds_references_not_secrets(lab: LabState) -> None:
    text = Path(lab.inventory).read_text()
    secrets = Path(lab.directory) / "secrets"
    for name in ("bmc-password", "maas-api-key"):
        assert (secrets / name).read_text() not in text
        assert (secrets / name).stat().st_mode & 0o077 == 0
    assert "file:secrets/bmc-password" in text or lab.bmc_note
    assert "PRIVATE KEY" not in text


def test_every_host_has_a_bmc_that_accepts_the_inventory_credentials(lab: LabState) -> None:
    if shutil.which("ipmi_sim") is None:
        assert lab.bmc_note is not None and "make ipmi-sim" in lab.bmc_note
        pytest.skip(lab.bmc_note)
    from pyghmi.ipmi import command

    password = (Path(lab.directory) / "secrets" / "bmc-password").read_text()
    for host in lab.hosts:
        assert host.bmc_port is not None
        bmc = command.Command(
            bmc="127.0.0.1", port=host.bmc_port, userid="admin", password=password
        )
        try:
            assert bmc.get_power() == {"powerstate": "off"}
        finally:
            bmc.ipmi_session.logout()


def test_a_second_up_is_refused_while_the_lab_runs(lab: LabState) -> None:
    directory = Path(lab.directory)
    again = opsgate("lab", "up", "--dir", str(directory), cwd=directory.parent)
    assert again.returncode == 2
    assert f"a lab is already running from {directory} (pid {lab.pid})" in again.stderr
    assert "opsgate lab down" in again.stderr
    assert json.loads((directory / "state.json").read_text())["pid"] == lab.pid


def test_status_lists_what_runs_on_which_port(lab: LabState) -> None:
    shown = opsgate("lab", "status", "--dir", lab.directory, "--json", cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    assert LabState.model_validate_json(shown.stdout) == lab
    table = opsgate("lab", "status", "--dir", lab.directory, cwd=ROOT).stdout
    assert f"127.0.0.1:{lab.hosts[0].ssh_port}" in table


def test_down_leaves_no_process_behind(tmp_path: Path) -> None:
    directory = tmp_path / ".lab"
    state = lab_up(directory)
    pids = [state.pid, *(h.bmc_pid for h in state.hosts if h.bmc_pid is not None)]
    assert not any(gone(pid) for pid in pids)
    stopped = opsgate("lab", "down", "--dir", str(directory), cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert f"lab stopped (pid {state.pid})" in stopped.stdout
    deadline = time.monotonic() + 5  # the lab has stopped; its zombie may await its reaper
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)
    assert all(refuses_connections(h.ssh_port) for h in state.hosts)
    assert not (directory / "state.json").exists()
    assert not (directory / "lab.pid").exists()
    status = opsgate("lab", "status", "--dir", str(directory), cwd=tmp_path)
    assert status.returncode == 1
    assert "no lab is running" in status.stderr
    again = opsgate("lab", "down", "--dir", str(directory), cwd=tmp_path)
    assert (again.returncode, "no lab was running" in again.stdout) == (0, True)


def test_a_killed_lab_leaves_a_stale_pid_that_up_replaces(tmp_path: Path) -> None:
    directory = tmp_path / ".lab"
    first = lab_up(directory)
    os.kill(first.pid, 9)
    deadline = time.monotonic() + 5
    while not gone(first.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opsgate("lab", "status", "--dir", str(directory), cwd=tmp_path).returncode == 1
    second = lab_up(directory)  # stops the simulators the killed lab could not stop
    opsgate("lab", "down", "--dir", str(directory), cwd=tmp_path)
    assert second.pid != first.pid
    leftovers = [host.bmc_pid for host in first.hosts if host.bmc_pid is not None]
    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in leftovers)


def test_a_lab_that_cannot_start_says_why(tmp_path: Path) -> None:
    directory = tmp_path / ".lab"
    failed = opsgate("lab", "up", "--dir", str(directory), "--host", "nogroup", cwd=tmp_path)
    assert failed.returncode == 2
    assert "the lab did not start (exit code 2)" in failed.stderr
    assert "'nogroup' is not NAME:GROUP[+GROUP...]" in failed.stderr
    assert not (directory / "lab.pid").exists()


def test_up_refuses_while_another_lab_holds_the_lock(tmp_path: Path) -> None:
    """Two ``up`` at once: the one that finds the lock held stops and says so."""
    directory = tmp_path / ".lab"
    directory.mkdir()
    with (directory / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = opsgate("lab", "up", "--dir", str(directory), cwd=tmp_path)
    assert refused.returncode == 2
    assert f"another lab is starting from {directory}" in refused.stderr
    assert not (directory / "state.json").exists()

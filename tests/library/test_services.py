"""The service blueprints on the lab: restart_service, system_maintenance, project_deployment.

Effects are read from the hosts' sandboxes (services/ of the systemctl stand-in, logs/, tmp/,
apps/), what ran where from the events and the hosts' command logs. Each test uses its own
unit, application or files and leaves the lab as it found it.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.lab import LabState
from tests.library.harness import (
    Library,
    age,
    commands,
    errors,
    fault,
    lab_snapshot,
    sandbox,
    tool,
)

pytestmark = pytest.mark.anyio

LAB_HOSTS = ("web-1:web", "web-2:web", "db-1:db")
WEB = ("web-1", "web-2")


def systemctl(lab: LabState, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return tool(lab, host, "systemctl", *argv)


def restarts(lab: LabState, host: str, unit: str) -> int:
    record = sandbox(lab, host) / "services" / f"{unit}.restarts"
    return len(record.read_text().splitlines()) if record.exists() else 0


def without(state: dict[str, str], *parts: str) -> dict[str, str]:
    return {k: v for k, v in state.items() if not any(p in k for p in parts)}


@pytest.fixture
def unit(lab: LabState, request: pytest.FixtureRequest) -> Iterator[str]:
    """An active unit (its name unique per test) on the web hosts, removed after."""
    name = request.node.name.replace("_", "-")[5:45].strip("-")
    for host in WEB:
        assert systemctl(lab, host, "start", name).returncode == 0
    yield name
    for host in WEB:
        for path in (sandbox(lab, host) / "services").glob(f"{name}*"):
            path.unlink()


@pytest.fixture
def token(tmp_path: Path) -> str:
    secret = tmp_path / "api-token"
    secret.write_text("s3cret-token\n")
    return f"file:{secret}"


# ---------------------------------------------------------------- restart_service


async def test_restart_service_restarts_the_unit_everywhere(
    library: Library, lab: LabState, unit: str, token: str
) -> None:
    view = await library.run(
        "restart_service", {"service": unit, "hosts": "group:web", "api_token": token}
    )
    assert view.status == "succeeded", errors(view)
    for host in WEB:
        assert restarts(lab, host, unit) == 1
        assert (sandbox(lab, host) / "services" / unit).read_text() == "active\n"
        assert any(
            c.startswith(f"sudo -n -- /bin/sh -c 'systemctl restart {unit}")
            for c in commands(lab, host)
        )
    verified = [e for e in library.events(view.execution_id) if e.step_id == "verify"]
    assert {e.target for e in verified if e.type == "step.succeeded"} == set(WEB)
    assert "s3cret-token" not in str([e.data for e in library.events(view.execution_id)])


async def test_restart_service_restarts_a_failed_unit(
    library: Library, lab: LabState, unit: str, token: str
) -> None:
    (sandbox(lab, "web-2") / "services" / unit).write_text("failed\n")
    view = await library.run(
        "restart_service", {"service": unit, "hosts": "web-2", "api_token": token}
    )
    assert view.status == "succeeded", errors(view)
    assert library.outputs(view.execution_id, "check") == [{"state": "failed"}]
    assert (sandbox(lab, "web-2") / "services" / unit).read_text() == "active\n"


async def test_restart_service_that_fails_on_a_host_starts_the_unit_again(
    library: Library, lab: LabState, unit: str, token: str
) -> None:
    before = lab_snapshot(lab)
    with fault(lab, "web-2", "systemctl.restart", "unit is masked"):
        params = {"service": unit, "hosts": "group:web", "batch_size": 1, "api_token": token}
        view = await library.run("restart_service", params)
    assert view.status == "rolled_back", errors(view)
    assert "unit is masked" in errors(view)
    # web-1 restarted (that cannot be undone: its restart record stays), then was started again
    assert restarts(lab, "web-1", unit) == 1
    assert any(c == f"sudo -n -- systemctl start {unit}" for c in commands(lab, "web-1"))
    assert without(lab_snapshot(lab), f"{unit}.restarts") == without(before, f"{unit}.restarts")


# ---------------------------------------------------------------- system_maintenance


@pytest.fixture
def files(lab: LabState) -> Iterator[dict[str, Path]]:
    """On web-1: logs/app.log with 2 generations, logs/empty.log, tmp/ with old and new files."""
    root = sandbox(lab, "web-1")
    made = {
        "log": root / "logs" / "app.log",
        "gen1": root / "logs" / "app.log.1.gz",
        "gen2": root / "logs" / "app.log.2.gz",
        "empty": root / "logs" / "empty.log",
        "old": root / "tmp" / "cache" / "old.bin",
        "older": root / "tmp" / "older.txt",
        "new": root / "tmp" / "new.txt",
    }
    for path in made.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    made["log"].write_text("line 3\nline 4\n")
    made["gen1"].write_bytes(gzip.compress(b"line 2\n"))
    made["gen2"].write_bytes(gzip.compress(b"line 1\n"))
    made["empty"].write_text("")
    for name, days in (("old", 8), ("older", 30), ("new", 1)):
        made[name].write_text(f"{name}\n")
        age(made[name], days)
    yield made
    shutil.rmtree(root / "logs", ignore_errors=True)
    shutil.rmtree(root / "tmp", ignore_errors=True)


MAINTENANCE = {"hosts": "group:web", "keep_logs": 2, "tmp_max_age_days": 7}


async def test_maintenance_rotates_logs_cleans_tmp_and_restarts(
    library: Library, lab: LabState, files: dict[str, Path], unit: str
) -> None:
    view = await library.run("system_maintenance", {**MAINTENANCE, "service": unit})
    assert view.status == "succeeded", errors(view)
    logs = files["log"].parent
    # keep 2: the new generation 1, the old 1 is now 2, the old 2 is gone
    assert sorted(p.name for p in logs.iterdir()) == [
        "app.log",
        "app.log.1.gz",
        "app.log.2.gz",
        "empty.log",
    ]
    assert files["log"].read_text() == ""
    assert gzip.decompress((logs / "app.log.1.gz").read_bytes()) == b"line 3\nline 4\n"
    assert gzip.decompress((logs / "app.log.2.gz").read_bytes()) == b"line 2\n"
    assert not files["old"].exists() and not files["older"].exists()
    assert files["new"].read_text() == "new\n"
    assert not (sandbox(lab, "web-1") / ".maintenance").exists()
    assert [restarts(lab, h, unit) for h in WEB] == [1, 1]
    message = library.outputs(view.execution_id, "report")[-1]["message"]
    assert "logs rotated 1, 0" in message and "temporary files removed 2, 0" in message


async def test_maintenance_that_fails_to_restart_puts_every_file_back(
    library: Library, lab: LabState, files: dict[str, Path], unit: str
) -> None:
    before = lab_snapshot(lab)
    with fault(lab, "web-1", "systemctl.restart", "unit is masked"):
        view = await library.run("system_maintenance", {**MAINTENANCE, "service": unit})
    assert view.status == "rolled_back", errors(view)
    assert "unit is masked" in errors(view)
    assert any("gzip -c" in c for c in commands(lab, "web-1"))  # it did rotate, then undid it
    assert lab_snapshot(lab) == before
    assert files["log"].read_text() == "line 3\nline 4\n"
    assert files["older"].read_text() == "older\n"


async def test_maintenance_refused_at_the_restart_gate_puts_every_file_back(
    library: Library, lab: LabState, files: dict[str, Path], unit: str
) -> None:
    before = lab_snapshot(lab)
    view = await library.run(
        "system_maintenance",
        {**MAINTENANCE, "service": unit},
        reject=frozenset({"approve_restart"}),
    )
    assert view.status == "rolled_back", errors(view)
    assert lab_snapshot(lab) == before
    assert [restarts(lab, h, unit) for h in WEB] == [0, 0]


# ---------------------------------------------------------------- project_deployment


def release(tmp_path: Path, version: str) -> Path:
    archive = tmp_path / f"shop-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in (("VERSION", f"{version}\n"), ("bin/server", "#!/bin/sh\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture
def app(lab: LabState, request: pytest.FixtureRequest) -> Iterator[str]:
    """An application name unique per test; its files and unit removed after."""
    name = "app-" + request.node.name.replace("_", "-")[5:30].strip("-")
    yield name
    for host in WEB:
        shutil.rmtree(sandbox(lab, host) / "apps" / name, ignore_errors=True)
        for path in (sandbox(lab, host) / "services").glob(f"{name}*"):
            path.unlink()


def current(lab: LabState, host: str, app: str) -> str | None:
    link = sandbox(lab, host) / "apps" / app / "current"
    return os.readlink(link) if link.is_symlink() else None


async def test_deployment_switches_each_host_to_the_new_release(
    library: Library, lab: LabState, app: str, tmp_path: Path
) -> None:
    first = {"app": app, "version": "1.0.0", "artifact": str(release(tmp_path, "1.0.0"))}
    view = await library.run("project_deployment", first)
    assert view.status == "succeeded", errors(view)
    second = {
        **first,
        "version": "1.1.0",
        "artifact": str(release(tmp_path, "1.1.0")),
        "batch_size": 2,
    }
    view = await library.run("project_deployment", second)
    assert view.status == "succeeded", errors(view)
    for host in WEB:
        root = sandbox(lab, host) / "apps" / app
        assert current(lab, host, app) == "releases/1.1.0"
        assert (root / "current" / "VERSION").read_text() == "1.1.0\n"
        assert sorted(p.name for p in (root / "releases").iterdir()) == ["1.0.0", "1.1.0"]
        assert (sandbox(lab, host) / "services" / app).read_text() == "active\n"
        assert restarts(lab, host, app) == 2
    assert library.outputs(view.execution_id, "release") == [{"previous": "releases/1.0.0"}] * 2
    again = await library.run("project_deployment", second)
    assert again.status == "rolled_back", errors(again)
    assert "release 1.1.0 of " + app + " is already on this host" in errors(again)


async def test_a_deployment_whose_restart_fails_changes_nothing(
    library: Library, lab: LabState, app: str, tmp_path: Path
) -> None:
    before = lab_snapshot(lab)
    with fault(lab, "web-1", "systemctl.restart", "unit is masked"):
        params = {"app": app, "version": "2.0.0", "artifact": str(release(tmp_path, "2.0.0"))}
        view = await library.run("project_deployment", params)
    assert view.status == "rolled_back", errors(view)
    assert "unit is masked" in errors(view)
    assert library.started_on(view.execution_id, "release") == [
        "web-1"
    ]  # batch 1: web-2 was never switched
    assert lab_snapshot(lab) == before


async def test_a_deployment_that_fails_its_health_check_switches_back(
    library: Library, lab: LabState, app: str, tmp_path: Path
) -> None:
    first = {"app": app, "version": "1.0.0", "artifact": str(release(tmp_path, "1.0.0"))}
    assert (await library.run("project_deployment", first)).status == "succeeded"
    before = lab_snapshot(lab)
    broken = {
        **first,
        "version": "1.1.0",
        "artifact": str(release(tmp_path, "1.1.0")),
        "health_url": lab.health_url + "/no-such-page",
        "batch_size": 2,
    }
    view = await library.run("project_deployment", broken)
    assert view.status == "rolled_back", errors(view)
    assert "404" in errors(view)
    for host in WEB:
        assert current(lab, host, app) == "releases/1.0.0"
        # switched, restarted, switched back, restarted: the restarts cannot be undone
        assert restarts(lab, host, app) == 3
    assert without(lab_snapshot(lab), ".restarts") == without(before, ".restarts")

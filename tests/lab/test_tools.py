"""The stand-in ``ctr``, ``systemctl``, ``sudo`` and ``biosutil`` tools, run as the lab's SSH
commands run them."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.lab.files import install_tools
from tests.lab.processes import tool


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    install_tools(tmp_path)
    return tmp_path


def test_ctr_runs_a_container_through_its_life(sandbox: Path) -> None:
    assert tool(sandbox, "ctr", "create", "web", "nginx:1.27").stdout == "web\n"
    assert tool(sandbox, "ctr", "start", "web").returncode == 0
    assert tool(sandbox, "ctr", "config", "web", "port=8080", "replicas=2").returncode == 0
    assert tool(sandbox, "ctr", "config", "web", "port=9090").returncode == 0
    assert tool(sandbox, "ctr", "list").stdout == "web\tnginx:1.27\trunning\n"
    inspected = tool(sandbox, "ctr", "inspect", "web").stdout.splitlines()
    assert inspected == ["name=web", "image=nginx:1.27", "state=running", "replicas=2", "port=9090"]
    assert (sandbox / "containers" / "web" / "state").read_text() == "running\n"
    assert tool(sandbox, "ctr", "stop", "web").returncode == 0
    assert tool(sandbox, "ctr", "rm", "web").returncode == 0
    assert not (sandbox / "containers" / "web").exists()
    assert tool(sandbox, "ctr", "list").stdout == ""


def test_ctr_refuses_to_remove_a_running_container(sandbox: Path) -> None:
    tool(sandbox, "ctr", "create", "db")
    tool(sandbox, "ctr", "start", "db")
    refused = tool(sandbox, "ctr", "rm", "db")
    assert refused.returncode == 1
    assert "is running: ctr stop db first" in refused.stderr
    assert (sandbox / "containers" / "db").is_dir()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ctr", "start", "ghost"], 1, "no container 'ghost' (ctr list shows them)"),
        (["ctr", "create", "../escape"], 2, "invalid container name '../escape'"),
        (["ctr", "config", "ghost", "a=1"], 1, "no container 'ghost'"),
        (["ctr", "frobnicate"], 2, "usage: ctr"),
        (["ctr"], 2, "usage: ctr"),
    ],
)
def test_ctr_explains_what_it_refuses(
    sandbox: Path, argv: list[str], code: int, message: str
) -> None:
    result = tool(sandbox, *argv)
    assert (result.returncode, message in result.stderr) == (code, True), result.stderr


def test_ctr_refuses_a_second_container_of_the_same_name(sandbox: Path) -> None:
    tool(sandbox, "ctr", "create", "web", "nginx:1")
    again = tool(sandbox, "ctr", "create", "web", "nginx:2")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert (sandbox / "containers" / "web" / "image").read_text() == "nginx:1\n"


def fault(sandbox: Path, operation: str) -> None:
    (sandbox / "faults").mkdir(exist_ok=True)
    (sandbox / "faults" / operation).write_text("disk on fire\n")


def files_of(sandbox: Path) -> dict[str, bytes]:
    """Every file of the sandbox but the tools and the fault switches."""
    return {
        str(path.relative_to(sandbox)): path.read_bytes()
        for path in sorted(sandbox.rglob("*"))
        if path.is_file() and path.relative_to(sandbox).parts[0] not in ("bin", "faults")
    }


def test_ctr_snapshot_and_restore_bring_a_container_back_exactly(sandbox: Path) -> None:
    tool(sandbox, "ctr", "create", "web", "nginx:1.26")
    tool(sandbox, "ctr", "config", "web", "port=8080")
    tool(sandbox, "ctr", "start", "web")
    assert tool(sandbox, "ctr", "snapshot", "web", "before").stdout == "before\n"
    assert (sandbox / "snapshots" / "web" / "before" / "image").read_text() == "nginx:1.26\n"
    kept = files_of(sandbox)
    assert tool(sandbox, "ctr", "upgrade", "web", "nginx:1.27").returncode == 0
    tool(sandbox, "ctr", "config", "web", "port=9090", "debug=1")
    tool(sandbox, "ctr", "stop", "web")
    assert tool(sandbox, "ctr", "snapshots", "web").stdout == "before\tnginx:1.26\trunning\n"
    restored = tool(sandbox, "ctr", "restore", "web", "before")
    assert restored.returncode == 0, restored.stderr
    assert files_of(sandbox) == kept
    # a removed container comes back too
    tool(sandbox, "ctr", "stop", "web")
    tool(sandbox, "ctr", "rm", "web")
    assert tool(sandbox, "ctr", "restore", "web", "before").returncode == 0
    assert files_of(sandbox) == kept
    assert tool(sandbox, "ctr", "snapshot-rm", "web", "before").returncode == 0
    assert not (sandbox / "snapshots").exists()
    assert tool(sandbox, "ctr", "snapshots", "web").stdout == ""


def test_ctr_upgrade_sets_the_image_of_an_existing_container_only(sandbox: Path) -> None:
    tool(sandbox, "ctr", "create", "web", "nginx:1.26")
    upgraded = tool(sandbox, "ctr", "upgrade", "web", "nginx:1.27")
    assert (upgraded.returncode, upgraded.stdout) == (0, "web now runs nginx:1.27\n")
    assert tool(sandbox, "ctr", "inspect", "web").stdout.splitlines()[1] == "image=nginx:1.27"
    refused = tool(sandbox, "ctr", "upgrade", "ghost", "nginx:1.27")
    assert refused.returncode == 1
    assert "no container 'ghost'" in refused.stderr
    assert not (sandbox / "containers" / "ghost").exists()
    assert tool(sandbox, "ctr", "upgrade", "web").returncode == 2


def test_ctr_health_needs_a_running_container_with_a_sound_image(sandbox: Path) -> None:
    tool(sandbox, "ctr", "create", "web", "nginx:1.26")
    created = tool(sandbox, "ctr", "health", "web")
    assert (created.returncode, created.stdout) == (1, "unhealthy: web is created, not running\n")
    tool(sandbox, "ctr", "start", "web")
    healthy = tool(sandbox, "ctr", "health", "web")
    assert (healthy.returncode, healthy.stdout) == (0, "healthy\n")
    tool(sandbox, "ctr", "upgrade", "web", "nginx:broken")
    broken = tool(sandbox, "ctr", "health", "web")
    assert broken.returncode == 1
    assert broken.stdout.startswith("unhealthy: web runs nginx:broken")
    assert tool(sandbox, "ctr", "health", "ghost").returncode == 1


def test_ctr_renames_a_container_but_never_over_another(sandbox: Path) -> None:
    tool(sandbox, "ctr", "create", "web", "nginx:1")
    tool(sandbox, "ctr", "create", "web.green", "nginx:2")
    refused = tool(sandbox, "ctr", "rename", "web.green", "web")
    assert (refused.returncode, "container 'web' already exists" in refused.stderr) == (1, True)
    assert tool(sandbox, "ctr", "rename", "web", "web.blue").returncode == 0
    assert tool(sandbox, "ctr", "rename", "web.green", "web").returncode == 0
    listed = sorted(tool(sandbox, "ctr", "list").stdout.splitlines())
    assert listed == ["web\tnginx:2\tcreated", "web.blue\tnginx:1\tcreated"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["ctr", "snapshot", "ghost", "t1"], 1, "no container 'ghost'"),
        (["ctr", "snapshot", "web", "../t"], 2, "invalid snapshot name '../t'"),
        (
            ["ctr", "snapshot", "web", "first"],
            1,
            "snapshot 'first' of container 'web' already exists",
        ),
        (["ctr", "restore", "web", "nope"], 1, "no snapshot 'nope' of container 'web'"),
        (["ctr", "snapshot-rm", "web", "nope"], 1, "no snapshot 'nope' of container 'web'"),
        (["ctr", "config", "web", "a=1", "oops"], 1, "'oops' is not KEY=VALUE"),
    ],
)
def test_ctr_refuses_bad_snapshots_and_changes_nothing(
    sandbox: Path, argv: list[str], code: int, message: str
) -> None:
    tool(sandbox, "ctr", "create", "web", "nginx:1")
    tool(sandbox, "ctr", "snapshot", "web", "first")
    before = files_of(sandbox)
    result = tool(sandbox, *argv)
    assert (result.returncode, message in result.stderr) == (code, True), result.stderr
    assert files_of(sandbox) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "new", "img:1"],
        ["start", "web"],
        ["stop", "web"],
        ["rm", "web"],
        ["rename", "web", "other"],
        ["config", "web", "a=1"],
        ["upgrade", "web", "img:2"],
        ["health", "web"],
        ["snapshot", "web", "t2"],
        ["snapshots", "web"],
        ["restore", "web", "t1"],
        ["snapshot-rm", "web", "t1"],
        ["list"],
        ["inspect", "web"],
    ],
)
def test_ctr_honours_a_fault_switch_for_every_subcommand(sandbox: Path, argv: list[str]) -> None:
    tool(sandbox, "ctr", "create", "web", "img:1")
    tool(sandbox, "ctr", "snapshot", "web", "t1")
    tool(sandbox, "ctr", "stop" if argv[0] == "rm" else "start", "web")
    before = files_of(sandbox)
    fault(sandbox, f"ctr.{argv[0]}")
    refused = tool(sandbox, "ctr", *argv)
    assert refused.returncode == 1
    assert refused.stderr == "ctr: injected fault: disk on fire\n"
    assert files_of(sandbox) == before
    (sandbox / "faults" / f"ctr.{argv[0]}").unlink()
    assert tool(sandbox, "ctr", *argv).returncode == 0


def test_systemctl_starts_stops_and_restarts_units(sandbox: Path) -> None:
    unknown = tool(sandbox, "systemctl", "is-active", "app")
    assert (unknown.returncode, unknown.stdout) == (3, "inactive\n")
    assert tool(sandbox, "systemctl", "start", "app").returncode == 0
    assert (sandbox / "services" / "app").read_text() == "active\n"
    active = tool(sandbox, "systemctl", "is-active", "app")
    assert (active.returncode, active.stdout) == (0, "active\n")
    assert tool(sandbox, "systemctl", "restart", "app").returncode == 0
    assert tool(sandbox, "systemctl", "restart", "app").returncode == 0
    restarts = (sandbox / "services" / "app.restarts").read_text().splitlines()
    assert len(restarts) == 2
    assert all(line.endswith(" restarted") for line in restarts)
    assert tool(sandbox, "systemctl", "stop", "app").returncode == 0
    stopped = tool(sandbox, "systemctl", "is-active", "app")
    assert (stopped.returncode, stopped.stdout) == (3, "inactive\n")
    (sandbox / "services" / "app").write_text("failed\n")
    failed = tool(sandbox, "systemctl", "is-active", "app")
    assert (failed.returncode, failed.stdout) == (3, "failed\n")


def test_systemctl_enables_and_disables_units(sandbox: Path) -> None:
    assert tool(sandbox, "systemctl", "is-enabled", "app").stdout == "disabled\n"
    assert tool(sandbox, "systemctl", "enable", "app").returncode == 0
    enabled = tool(sandbox, "systemctl", "is-enabled", "app")
    assert (enabled.returncode, enabled.stdout) == (0, "enabled\n")
    assert tool(sandbox, "systemctl", "disable", "app").returncode == 0
    assert tool(sandbox, "systemctl", "is-enabled", "app").returncode == 1


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["systemctl", "stop", "ghost"], 5, "Unit ghost not loaded"),
        (["systemctl", "start", "../x"], 2, "invalid unit name '../x'"),
        (["systemctl", "reload", "app"], 2, "usage: systemctl"),
        (["systemctl", "start"], 2, "usage: systemctl"),
    ],
)
def test_systemctl_explains_what_it_refuses(
    sandbox: Path, argv: list[str], code: int, message: str
) -> None:
    result = tool(sandbox, *argv)
    assert (result.returncode, message in result.stderr) == (code, True), result.stderr


@pytest.mark.parametrize("command", ["is-active", "start", "stop", "restart", "enable"])
def test_systemctl_honours_a_fault_switch(sandbox: Path, command: str) -> None:
    tool(sandbox, "systemctl", "start", "app")
    before = files_of(sandbox)
    fault(sandbox, f"systemctl.{command}")
    refused = tool(sandbox, "systemctl", command, "app")
    assert (refused.returncode, refused.stderr) == (1, "systemctl: injected fault: disk on fire\n")
    assert files_of(sandbox) == before


def test_sudo_runs_the_rest_of_its_command_line(sandbox: Path) -> None:
    ran = tool(sandbox, "sudo", "-n", "--", str(sandbox / "bin" / "systemctl"), "restart", "app")
    assert ran.returncode == 0, ran.stderr
    assert (sandbox / "services" / "app").read_text() == "active\n"
    assert tool(sandbox, "sudo", "sh", "-c", "exit 7").returncode == 7
    assert tool(sandbox, "sudo", "-n", "printf", "%s", "-n").stdout == "-n"
    refused = tool(sandbox, "sudo", "-u", "root", "id")
    assert (refused.returncode, "only -n" in refused.stderr) == (1, True)


def test_biosutil_exports_edits_and_imports_the_settings(sandbox: Path) -> None:
    exported = sandbox / "bios.conf"
    assert tool(sandbox, "biosutil", "export", str(exported)).returncode == 0
    assert "BootMode=Legacy" in exported.read_text().splitlines()
    exported.write_text("# a template\nBootMode=UEFI\nVirtualizationTechnology=Enabled\n")
    imported = tool(sandbox, "biosutil", "import", str(exported))
    assert imported.returncode == 0, imported.stderr
    assert tool(sandbox, "biosutil", "get", "BootMode").stdout == "UEFI\n"
    assert tool(sandbox, "biosutil", "get", "VirtualizationTechnology").stdout == "Enabled\n"
    assert tool(sandbox, "biosutil", "get", "PowerProfile").stdout == "Balanced\n"


def test_biosutil_import_with_an_unknown_setting_changes_nothing(sandbox: Path) -> None:
    template = sandbox / "bad.conf"
    template.write_text("BootMode=UEFI\nTurboBoost=Max\n")
    refused = tool(sandbox, "biosutil", "import", str(template))
    assert refused.returncode == 1
    assert "unknown setting 'TurboBoost'; known: BootMode" in refused.stderr
    assert tool(sandbox, "biosutil", "get", "BootMode").stdout == "Legacy\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["biosutil", "get", "Boot.*"], "is not a setting name"),
        (["biosutil", "get", "Nope"], "unknown setting 'Nope'"),
        (["biosutil", "import", "/no/such/file"], "no file '/no/such/file' to import"),
        (["biosutil", "flash", "x"], "usage: biosutil"),
    ],
)
def test_biosutil_explains_what_it_refuses(sandbox: Path, argv: list[str], message: str) -> None:
    result = tool(sandbox, *argv)
    assert result.returncode != 0
    assert message in result.stderr

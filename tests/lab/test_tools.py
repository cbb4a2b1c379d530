"""The stand-in ``ctr`` and ``biosutil`` tools, run as the lab's SSH commands run them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsgate.lab.files import install_tools


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    install_tools(tmp_path)
    return tmp_path


def tool(sandbox: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run from another folder: the tools find their sandbox from their own path."""
    return subprocess.run(
        [str(sandbox / "bin" / argv[0]), *argv[1:]],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


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

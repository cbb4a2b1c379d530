"""The ``opsgate`` command as a real process, a lab started through it, and the lab's
stand-in tools run directly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opsgate.lab.state import LabState


def opsgate(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsgate", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def lab_up(directory: Path, *args: str) -> LabState:
    started = opsgate("lab", "up", "--dir", str(directory), *args, cwd=directory.parent)
    assert started.returncode == 0, started.stderr
    return LabState.model_validate_json((directory / "state.json").read_text())


def lab_down(directory: Path) -> None:
    stopped = opsgate("lab", "down", "--dir", str(directory), cwd=directory.parent)
    assert stopped.returncode == 0, stopped.stderr


def tool(sandbox: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the sandbox's stand-in tool ``argv[0]`` from another folder: the tools find their
    sandbox from their own path."""
    return subprocess.run(
        [str(sandbox / "bin" / argv[0]), *argv[1:]],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

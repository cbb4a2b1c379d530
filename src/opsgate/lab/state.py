"""What a running lab publishes in its directory: ``lab.pid`` and ``state.json``.

The lab process writes both once every service listens, and removes them when it stops;
``lab status`` / ``lab down`` and tests read them. A pid file whose process is gone (the lab
was killed) is stale and ignored.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

PID_FILE = "lab.pid"
STATE_FILE = "state.json"
LOG_FILE = "lab.log"
LOCK_FILE = "lab.lock"
RUNNER_MODULE = "opsgate.lab.runner"
#: Exit code of a lab process that found another one holding ``lab.lock``.
ALREADY_RUNNING = 3


class LabHost(BaseModel):
    """One SSH host (and its BMC, when ipmi_sim runs)."""

    name: str
    groups: list[str]
    ssh_port: int
    sandbox: str
    command_log: str
    maas_system_id: str
    bmc_port: int | None = None
    bmc_pid: int | None = None


class LabState(BaseModel):
    """Where everything of one running lab listens."""

    pid: int
    directory: str
    inventory: str
    known_hosts: str
    hosts: list[LabHost]
    maas_url: str
    maas_api_key_file: str
    health_url: str
    #: Why BMCs are missing, when they are.
    bmc_note: str | None = None


def write_state(directory: Path, state: LabState) -> None:
    """Publish ``state`` atomically (readers never see half a file), then the pid."""
    partial = directory / f"{STATE_FILE}.tmp"
    partial.write_text(state.model_dump_json(indent=2))
    partial.replace(directory / STATE_FILE)
    (directory / PID_FILE).write_text(f"{state.pid}\n")


def read_state(directory: Path) -> LabState | None:
    """The state of the lab running from ``directory``, or None when none runs."""
    pid = running_pid(directory)
    path = directory / STATE_FILE
    if pid is None or not path.exists():
        return None
    state = LabState.model_validate_json(path.read_text())
    return state if state.pid == pid else None


def running_pid(directory: Path) -> int | None:
    """The pid in ``lab.pid`` if that process is a live lab, else None."""
    try:
        pid = int((directory / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if is_lab_process(pid) else None


def is_lab_process(pid: int) -> bool:
    """Whether ``pid`` is alive and runs the lab (a recycled pid is not)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    zombie = status.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and RUNNER_MODULE.encode() in command


def clear_state(directory: Path) -> None:
    for name in (PID_FILE, STATE_FILE):
        (directory / name).unlink(missing_ok=True)

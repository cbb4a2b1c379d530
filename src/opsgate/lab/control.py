"""``opsgate lab up | down | status``: start the lab process, stop it, say what runs where.

``up`` refuses while a lab runs from the same directory (the pid file names a live lab
process; the lab's lock file settles a race between two ``up``), starts the runner in a
session of its own with its output in ``lab.log``, and returns once ``state.json`` is written.
``down`` sends SIGTERM, waits for the lab to stop its services, and kills whatever is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from opsgate.errors import ConfigurationError, ConflictError
from opsgate.lab.bmc import is_simulator, stop_bmc
from opsgate.lab.state import (
    ALREADY_RUNNING,
    LOG_FILE,
    RUNNER_MODULE,
    STATE_FILE,
    LabState,
    clear_state,
    is_lab_process,
    read_state,
    running_pid,
)

#: Two web hosts, a database host and two bare-metal servers (for the provisioning blueprints).
DEFAULT_HOSTS = ("web-1:web", "web-2:web", "db-1:db", "srv-01:server", "srv-02:server")
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def up(
    directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS, commission_seconds: float = 1.0
) -> LabState:
    """Start a lab from ``directory`` and return its state once every service listens."""
    directory = directory.resolve()
    pid = running_pid(directory)
    if pid is not None:
        raise ConflictError(
            f"a lab is already running from {directory} (pid {pid}): use it (opsgate lab "
            "status), or stop it first with opsgate lab down"
        )
    directory.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(directory)
    command = [sys.executable, "-m", RUNNER_MODULE, str(directory)]
    command += [f"--host={host}" for host in hosts]
    command += [f"--commission-seconds={commission_seconds}"]
    with (directory / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while (state := read_state(directory)) is None or state.pid != process.pid:
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                _terminate(process.pid)
            if process.returncode == ALREADY_RUNNING:
                raise ConflictError(
                    f"another lab is starting from {directory}: wait for it (opsgate lab "
                    "status), or stop it with opsgate lab down"
                )
            raise ConfigurationError(
                f"the lab did not start (exit code {process.poll()}); the end of "
                f"{directory / LOG_FILE}:\n{_tail(directory / LOG_FILE)}"
            )
        time.sleep(0.05)
    return state


def down(directory: Path) -> LabState | None:
    """Stop the lab running from ``directory``; the state it had, or None if none ran."""
    directory = directory.resolve()
    state = read_state(directory)
    pid = running_pid(directory)
    if pid is not None:
        _terminate(pid)
    _stop_leftovers(directory)
    return state


def _stop_leftovers(directory: Path) -> None:
    """Stop the simulators of a lab that was killed before its clean-up, then forget it."""
    path = directory / STATE_FILE
    if path.exists():
        for host in LabState.model_validate_json(path.read_text()).hosts:
            if host.bmc_pid is not None and is_simulator(host.bmc_pid):
                stop_bmc(host.bmc_pid)
    clear_state(directory)


def status(directory: Path) -> LabState | None:
    """The running lab's state, or None."""
    return read_state(directory.resolve())


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL to the lab's process group if it has not stopped in time."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while is_lab_process(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def describe(state: LabState) -> list[tuple[str, str, str]]:
    """(service, address, detail) rows for ``lab status`` and ``lab up``."""
    rows = [
        (
            f"ssh {host.name}",
            f"127.0.0.1:{host.ssh_port}",
            f"groups {', '.join(host.groups)}; sandbox {host.sandbox}",
        )
        for host in state.hosts
    ]
    rows.extend(
        (f"bmc {host.name}", f"127.0.0.1:{host.bmc_port}/udp", "ipmi_sim")
        for host in state.hosts
        if host.bmc_port is not None
    )
    if state.bmc_note:
        rows.append(("bmc", "-", f"not started: {state.bmc_note}"))
    rows.append(("maas", state.maas_url, f"Bearer key in {state.maas_api_key_file}"))
    rows.append(("http", f"{state.health_url}/healthz", "health and /version"))
    return rows


def hints(state: LabState) -> list[str]:
    """How to use the lab: the inventory to point opsgate at, and commands to try."""
    inventory = _relative(Path(state.inventory))
    key = _relative(Path(state.maas_api_key_file))
    return [
        f"inventory: {inventory} (known_hosts, keys and secrets beside it)",
        f"try: OPSGATE_INVENTORY={inventory} opsgate run disk_usage_report -p hosts='*'",
        f"     opsgate run http_health_probe -p base_url={state.health_url}",
        f'MaaS API: curl -H "Authorization: Bearer $(cat {key})" {state.maas_url}machines/',
        "stop: opsgate lab down",
    ]


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it (shorter to type)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path

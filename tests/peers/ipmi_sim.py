"""A real BMC on 127.0.0.1 for the ``ipmi`` tests: OpenIPMI's ``ipmi_sim`` (package openipmi).

The simulator speaks IPMI 2.0 RMCP+ with the real pyghmi client: sessions, chassis power
(it is "on" while the ``startcmd`` process lives) and LAN configuration. It answers boot device,
sensor and FRU requests with IPMI errors, which the tests use as the BMC-refuses path.
``make test`` installs it (``make ipmi-sim``); without it these tests skip, and fail under
``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

USER, PASSWORD = "admin", "bmc-secret-7Hq"

LAN_CONF = """\
name "opsgate-sim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {serial_port} codec VM
  startcmd "sleep 100000"
  startnow false
  user 2 true  "{user}" "{password}" admin 10 none md2 md5 straight
"""

EMULATOR = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


@dataclass(frozen=True)
class SimulatedBMC:
    address: str
    port: int
    user: str
    password: str


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _listening(port: int) -> bool:
    """Whether a UDP socket is bound to 127.0.0.1:port (from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == wanted for line in table.readlines()[1:])


@contextmanager
def simulated_bmc(folder: Path) -> Iterator[SimulatedBMC]:
    """Start ipmi_sim with a fresh state folder; stop it and its power process afterwards."""
    program = shutil.which("ipmi_sim")
    if program is None:
        message = "ipmi_sim is not installed: run `make ipmi-sim` (apt-get install openipmi)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the IPMI tests to run: {message}")
        pytest.skip(message)
    port = free_port(socket.SOCK_DGRAM)
    (folder / "state").mkdir()
    (folder / "lan.conf").write_text(
        LAN_CONF.format(
            port=port, serial_port=free_port(socket.SOCK_STREAM), user=USER, password=PASSWORD
        )
    )
    (folder / "emu.cmds").write_text(EMULATOR)
    process = subprocess.Popen(
        [program, "-c", "lan.conf", "-f", "emu.cmds", "-n", "-s", str(folder / "state")],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ipmi_sim did not start (exit code {process.poll()})")
            time.sleep(0.02)
        yield SimulatedBMC("127.0.0.1", port, USER, PASSWORD)
    finally:
        # The simulator and the power process it started share its process group.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

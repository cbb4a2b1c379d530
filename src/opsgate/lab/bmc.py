"""One BMC simulator per lab server: OpenIPMI's ``ipmi_sim`` (Debian package ``openipmi``).

It speaks IPMI 2.0 RMCP+ on a UDP port of 127.0.0.1 with one admin user; its LAN settings
persist in its state folder, and chassis power/boot requests land in files of ``chassis/``
(a shell script is its ``chassis_control``). The ``ipmi`` tests start theirs through
:func:`start_bmc` too, with sensors and FRU data added to the emulator commands.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MISSING = "ipmi_sim is not installed: run `make ipmi-sim` (apt-get install openipmi)"

LAN_CONF = """\
name "{name}"
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
  chassis_control "sh chassis.sh chassis"
  user 2 true  "{user}" "{password}" admin 10 none md2 md5 straight
"""

EMULATOR = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""

#: ipmi_sim's chassis_control: ``get NAME...`` prints ``NAME:VALUE``, ``set NAME VALUE...`` stores.
CHASSIS = """\
state=$1; op=$2; shift 2
case $op in
  get) for name; do printf '%s:%s\\n' "$name" "$(cat "$state/$name")"; done ;;
  set) while [ $# -ge 2 ]; do
         printf '%s\\n' "$2" > "$state/$1"
         if [ "$1" = shutdown ]; then echo 0 > "$state/power"; fi
         shift 2
       done ;;
  *) echo "unknown operation $op"; exit 1 ;;
esac
"""


def ipmi_sim() -> str | None:
    """The simulator's path, or None when it is not installed."""
    return shutil.which("ipmi_sim")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _listening(port: int) -> bool:
    """Whether a UDP socket is bound to 127.0.0.1:port (from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == wanted for line in table.readlines()[1:])


def start_bmc(
    folder: Path, name: str, user: str, password: str, *, emulator: str = EMULATOR
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ipmi_sim for ``name`` in ``folder`` (state kept across runs); its process and port.

    ``emulator`` is the simulator's command file (``ipmi_sim -f``): the management controller,
    and whatever sensors or FRU data a caller adds before its ``mc_enable``.
    """
    program = ipmi_sim()
    if program is None:
        raise RuntimeError(MISSING)
    port = free_udp_port()
    (folder / "state").mkdir(parents=True, exist_ok=True)
    chassis = folder / "chassis"
    chassis.mkdir(exist_ok=True)
    for item, initial in (("power", "0"), ("boot", "none")):
        if not (chassis / item).exists():
            (chassis / item).write_text(f"{initial}\n")
    (folder / "chassis.sh").write_text(CHASSIS)
    conf = LAN_CONF.format(name=name, port=port, user=user, password=password)
    (folder / "lan.conf").write_text(conf)
    (folder / "lan.conf").chmod(0o600)
    (folder / "emu.cmds").write_text(emulator)
    process = subprocess.Popen(
        [program, "-c", "lan.conf", "-f", "emu.cmds", "-n", "-s", str(folder / "state")],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_bmc(process.pid)
            raise RuntimeError(f"ipmi_sim for {name} did not start (exit code {process.poll()})")
        time.sleep(0.02)
    return process, port


def is_simulator(pid: int) -> bool:
    """Whether ``pid`` still runs ipmi_sim (not a recycled pid)."""
    try:
        return b"ipmi_sim" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def stop_bmc(pid: int) -> None:
    """Kill the simulator and any chassis script it runs (they share its process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return

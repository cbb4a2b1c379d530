"""One BMC simulator per lab server: OpenIPMI's ``ipmi_sim`` (Debian package ``openipmi``).

It speaks IPMI 2.0 RMCP+ on a UDP port of 127.0.0.1 with one admin user. Its state is files
of its folder, kept across runs, so a test can read what the BMC received: the LAN settings a
client commits land in ``lan/`` (a shell script is its ``lan_config_program``; factory state:
DHCP without a lease, so no address), chassis power and boot requests in ``chassis/`` (another
script is its ``chassis_control``). A power-on runs the folder's ``boot.sh`` when there is one
(the lab activates the host's pending firmware with it). The ``ipmi`` tests start theirs through
:func:`start_bmc` too, with sensors and FRU data added to the emulator commands.
"""

from __future__ import annotations

import hashlib
import os
import shlex
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
    lan_config_program "sh lan.sh lan {lan_fault}"
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

#: The full sensor record (SDR) of the lab servers' one sensor, a temperature sensor named
#: "Inlet Temp" (°C), as OpenIPMI's sdrcomp compiles it.
INLET_SDR = (
    "0x01 0x00 0x51 0x01 0x35 0x20 0x00 0x01 0x07 0x01 0x45 0x00 0x01 0x01 0x00 0x00 0x00 0x00 "
    "0x00 0x00 0x00 0x01 0x00 0x00 0x01 0x00 0x00 0x01 0x01 0x00 0x00 0x00 0x00 0x00 0xff 0x00 "
    "0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0xca 0x49 0x6e 0x6c 0x65 0x74 0x20 "
    "0x54 0x65 0x6d 0x70"
)

#: The lab servers' BMC: :data:`EMULATOR` with an inlet temperature of 24 °C, so that sensor
#: reads (``ipmi get_sensors``) find a healthy sensor, as on a real server.
LAB_EMULATOR = EMULATOR.replace(
    "mc_enable 0x20\n",
    f"sensor_add 0x20 0 1 0x01 0x01\nmain_sdr_add 0x20 {INLET_SDR}\n"
    "sensor_set_value 0x20 0 1 24 0\nsensor_set_event_support 0x20 0 1 enable scanning per-state "
    "000000000000000 000000000000000 000000000000000 000000000000000\nmc_enable 0x20\n",
)

#: ipmi_sim's chassis_control: ``get NAME...`` prints ``NAME:VALUE``, ``set NAME VALUE...`` stores.
CHASSIS = """\
state=$1; op=$2; shift 2
case $op in
  get) for name; do printf '%s:%s\\n' "$name" "$(cat "$state/$name")"; done ;;
  set) while [ $# -ge 2 ]; do
         printf '%s\\n' "$2" > "$state/$1"
         if [ "$1" = shutdown ]; then echo 0 > "$state/power"; fi
         if [ "$1" = power ] && [ "$2" = 1 ] && [ -f boot.sh ]; then sh boot.sh >/dev/null 2>&1; fi
         shift 2
       done ;;
  *) echo "unknown operation $op"; exit 1 ;;
esac
"""

#: ipmi_sim's lan_config_program: ``get NAME...`` prints ``NAME:VALUE``; ``set NAME VALUE...``
#: (on a client's commit) stores. Switching to DHCP drops the static address: the lab has no
#: DHCP server, so a BMC on DHCP has no address (0.0.0.0), as in its factory state. While the
#: fault switch (the second argument) exists, checks and changes are refused.
LAN = """\
state=$1; fault=$2; op=$3; shift 3
if [ "$op" != get ] && [ -f "$fault" ]; then echo "injected fault: $(cat "$fault")"; exit 1; fi
case $op in
  get) for name; do
         case $name in
           *mac_addr) none=00:00:00:00:00:00 ;; ip_addr_src) none=dhcp ;; *) none=0.0.0.0 ;;
         esac
         if [ -f "$state/$name" ]; then value=$(cat "$state/$name"); else value=$none; fi
         printf '%s:%s\\n' "$name" "$value"
       done ;;
  check) ;;
  set) while [ $# -ge 2 ]; do
         printf '%s\\n' "$2" > "$state/$1"
         if [ "$1" = ip_addr_src ] && [ "$2" = dhcp ]; then
           for name in ip_addr subnet_mask default_gw_ip_addr; do
             echo 0.0.0.0 > "$state/$name"
           done
         fi
         shift 2
       done ;;
  *) echo "unknown operation $op"; exit 1 ;;
esac
"""

#: The factory LAN settings (``mac_addr`` is derived from the BMC's name).
FACTORY_LAN = {
    "ip_addr_src": "dhcp",
    "ip_addr": "0.0.0.0",
    "subnet_mask": "0.0.0.0",
    "default_gw_ip_addr": "0.0.0.0",
}


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
    folder: Path,
    name: str,
    user: str,
    password: str,
    *,
    emulator: str = EMULATOR,
    on_boot: str | None = None,
    lan_fault: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ipmi_sim for ``name`` in ``folder`` (state kept across runs); its process and port.

    ``emulator`` is the simulator's command file (``ipmi_sim -f``): the management controller,
    and whatever sensors or FRU data a caller adds before its ``mc_enable``. ``on_boot`` is a
    shell script run at each power-on; while the file ``lan_fault`` exists, the BMC refuses
    LAN changes.
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
    lan = folder / "lan"
    lan.mkdir(exist_ok=True)
    mac = hashlib.sha256(name.encode()).hexdigest()[:6]
    factory = {**FACTORY_LAN, "mac_addr": "52:54:00:" + ":".join([mac[:2], mac[2:4], mac[4:]])}
    for item, initial in factory.items():
        if not (lan / item).exists():
            (lan / item).write_text(f"{initial}\n")
    (folder / "lan.sh").write_text(LAN)
    boot = folder / "boot.sh"
    if on_boot is None:
        boot.unlink(missing_ok=True)
    else:
        boot.write_text(on_boot)
    switch = lan_fault or folder / "faults" / "lan.set"
    conf = LAN_CONF.format(
        name=name, port=port, user=user, password=password, lan_fault=shlex.quote(str(switch))
    )
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

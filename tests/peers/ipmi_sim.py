"""A real BMC on 127.0.0.1 for the ``ipmi`` tests: OpenIPMI's ``ipmi_sim`` (package openipmi).

The simulator speaks IPMI 2.0 RMCP+ with the real pyghmi client. It is configured to answer
every operation of the action: LAN configuration (built in); chassis power and boot device,
which ipmi_sim hands to its ``chassis_control`` program (here a shell script keeping the state
in files, so a test can read what the BMC received); a temperature sensor with a reading (its
SDR compiled by OpenIPMI's ``sdrcomp``); and FRU 0 inventory data.
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

#: What the simulated system's sensors (°C, by name) and FRU report, for the tests to compare.
TEMPERATURES = {"Inlet Temp": 42, "CPU Temp": 120, "Exhaust Temp": 149}
#: The temperature sensors' upper thresholds (°C): non-critical, critical, non-recoverable.
UPPER_THRESHOLDS = (112, 144, 160)
PRODUCT = {"manufacturer": "Acme", "product": "Sim", "serial": "S42"}

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
  chassis_control "sh chassis.sh chassis"
  user 2 true  "{user}" "{password}" admin 10 none md2 md5 straight
"""

#: ipmi_sim's chassis_control protocol: ``get NAME...`` prints ``NAME:VALUE`` lines, ``set NAME
#: VALUE...`` stores them (power 0/1, boot none/pxe/default/cdrom/bios, reset, shutdown, identify).
CHASSIS = """\
state=$1; op=$2; shift 2
case $op in
  get) for name; do printf '%s:%s\\n' "$name" "$(cat "$state/$name")"; done ;;
  set) while [ $# -ge 2 ]; do
         printf '%s\\n' "$2" > "$state/$1"
         # A graceful shutdown request: the simulated host's OS powers it off.
         if [ "$1" = shutdown ]; then echo 0 > "$state/power"; fi
         shift 2
       done ;;
  *) echo "unknown operation $op"; exit 1 ;;
esac
"""

#: The full sensor record of a temperature sensor, in sdrcomp's source format.
TEMPERATURE_SDR = """\
sdr type 1
  sensor_owner_id 0x20
  sensor_owner_lun 0
  channel_number 0
  sensor_number {number}
  entity_id system_board
  entity_instance 1
  sensor_type Temperature
  init_scanning true
  init_sensor_type true
  default_sensor_scan_on true
  event_reading_type_code 1
  analog_data_format unsigned
  rate_unit none
  modifier_unit none
  percentage false
  base_unit degrees_C
  modifier_unit_code unspecified
  linearization linear
  m 1
  tolerance 0
  b 0
  accuracy 1
  accuracy_exp 0
  sensor_direction input
  r_exp 0
  b_exp 0
  sensor_maximum 255
  sensor_minimum 0
  id_string "{name}"
endsdr
"""

EMULATOR = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
{sensors}
mc_add_fru_data 0x20 0 {fru_size} data {fru}
mc_enable 0x20
"""

#: A temperature sensor: its SDR, thresholds (upper ones only), reading and event scanning.
SENSOR = """\
sensor_add 0x20 0 {number} 0x01 0x01
main_sdr_add 0x20 {sdr}
sensor_set_threshold 0x20 0 {number} settable 111000 {thresholds} 00 00 00
sensor_set_value 0x20 0 {number} {value} 0
sensor_set_event_support 0x20 0 {number} enable scanning per-state \\
  000000000000000 000000000000000 000000000000000 000000000000000
"""


@dataclass(frozen=True)
class SimulatedBMC:
    address: str
    port: int
    user: str
    password: str
    chassis: Path

    def chassis_state(self, name: str) -> str:
        """What the BMC last handed its chassis control for ``name`` (``power``, ``boot``)."""
        return (self.chassis / name).read_text().strip()


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


def _hex(data: bytes) -> str:
    return " ".join(f"0x{byte:02x}" for byte in data)


def _fru_area(fields: bytes, header: bytes) -> bytes:
    """One FRU info area: header, type/length fields, end marker, padding to 8, checksum."""
    body = header + fields + b"\xc1"
    body += b"\0" * (-(len(body) + 1) % 8)
    length = (len(body) + 1) // 8
    body = body[:1] + bytes([length]) + body[2:]
    return body + bytes([-sum(body) % 256])


def _texts(*values: str) -> bytes:
    return b"".join(bytes([0xC0 | len(value)]) + value.encode() for value in values)


def fru_image() -> bytes:
    """FRU 0 in the IPMI FRU format: a common header and a product info area, 32 bytes.

    ipmi_sim answers FRU reads of at most 32 bytes (a longer read goes unanswered, or is
    refused with 0xC8, which pyghmi does not take as "read less"), and pyghmi reads a FRU this
    small in one request, so the whole image must fit in 32 bytes.
    """
    product = _fru_area(
        _texts(PRODUCT["manufacturer"], PRODUCT["product"], "", "", PRODUCT["serial"], "", ""),
        bytes([1, 0, 0]),  # version, length (filled in), language
    )
    header = bytes([1, 0, 0, 0, 1, 0, 0])  # version; only a product area, at offset 8
    image = header + bytes([-sum(header) % 256]) + product
    assert len(image) <= 32, "ipmi_sim cannot serve a FRU image over 32 bytes to pyghmi"
    return image


def _sensors(folder: Path, sdrcomp: str) -> str:
    """The emulator commands of every sensor in :data:`TEMPERATURES`, SDRs compiled by sdrcomp."""
    thresholds = " ".join(f"0x{value:02x}" for value in reversed(UPPER_THRESHOLDS))
    commands = []
    for number, (name, value) in enumerate(TEMPERATURES.items(), start=1):
        source, compiled = folder / f"sensor{number}.sdrs", folder / f"sensor{number}.bin"
        source.write_text(TEMPERATURE_SDR.format(number=number, name=name))
        subprocess.run(
            [sdrcomp, "-r", "-o", str(compiled), str(source)], check=True, capture_output=True
        )
        sdr = _hex(compiled.read_bytes())
        commands.append(SENSOR.format(number=number, sdr=sdr, thresholds=thresholds, value=value))
    return "".join(commands)


def _configure(folder: Path, port: int, sdrcomp: str) -> None:
    """Write the simulator's files: lan.conf, emulator commands, chassis control and state."""
    (folder / "state").mkdir()
    (folder / "chassis").mkdir()
    (folder / "chassis" / "power").write_text("0\n")
    (folder / "chassis" / "boot").write_text("none\n")
    (folder / "chassis.sh").write_text(CHASSIS)
    (folder / "lan.conf").write_text(LAN_CONF.format(port=port, user=USER, password=PASSWORD))
    fru = fru_image()
    (folder / "emu.cmds").write_text(
        EMULATOR.format(sensors=_sensors(folder, sdrcomp), fru_size=len(fru), fru=_hex(fru))
    )


@contextmanager
def simulated_bmc(folder: Path) -> Iterator[SimulatedBMC]:
    """Start ipmi_sim with a fresh state folder; stop it (and its chassis scripts) afterwards."""
    program, sdrcomp = shutil.which("ipmi_sim"), shutil.which("sdrcomp")
    if program is None or sdrcomp is None:
        message = "ipmi_sim is not installed: run `make ipmi-sim` (apt-get install openipmi)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the IPMI tests to run: {message}")
        pytest.skip(message)
    port = free_port(socket.SOCK_DGRAM)
    _configure(folder, port, sdrcomp)
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
        yield SimulatedBMC("127.0.0.1", port, USER, PASSWORD, folder / "chassis")
    finally:
        # The simulator and any chassis script it runs share its process group.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

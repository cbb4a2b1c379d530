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
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsgate.lab.bmc import EMULATOR as BASE_EMULATOR
from opsgate.lab.bmc import MISSING, ipmi_sim, start_bmc, stop_bmc

USER, PASSWORD = "admin", "bmc-secret-7Hq"

#: What the simulated system's sensors (°C, by name) and FRU report, for the tests to compare.
TEMPERATURES = {"Inlet Temp": 42, "CPU Temp": 120, "Exhaust Temp": 149}
#: The temperature sensors' upper thresholds (°C): non-critical, critical, non-recoverable.
UPPER_THRESHOLDS = (112, 144, 160)
PRODUCT = {"manufacturer": "Acme", "product": "Sim", "serial": "S42"}

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

#: The lab's emulator commands plus the sensors and FRU data the tests read.
EMULATOR = BASE_EMULATOR.replace(
    "mc_enable 0x20\n", "{sensors}\nmc_add_fru_data 0x20 0 {fru_size} data {fru}\nmc_enable 0x20\n"
)

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


@contextmanager
def simulated_bmc(folder: Path) -> Iterator[SimulatedBMC]:
    """Start ipmi_sim with a fresh state folder; stop it (and its chassis scripts) afterwards."""
    sdrcomp = shutil.which("sdrcomp")
    if ipmi_sim() is None or sdrcomp is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the IPMI tests to run: {MISSING}")
        pytest.skip(MISSING)
    folder.mkdir(parents=True, exist_ok=True)
    fru = fru_image()
    emulator = EMULATOR.format(sensors=_sensors(folder, sdrcomp), fru_size=len(fru), fru=_hex(fru))
    process, port = start_bmc(folder, "opsgate-sim", USER, PASSWORD, emulator=emulator)
    try:
        yield SimulatedBMC("127.0.0.1", port, USER, PASSWORD, folder / "chassis")
    finally:
        stop_bmc(process.pid)
        process.wait()

"""The ``ipmi`` action: power and boot control of a target through its BMC."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictBool, model_validator

from opsgate.actions.base import ActionArguments
from opsgate.spec.structure import describe, invalid

Operation = Literal[
    "power_status",
    "power_on",
    "power_off",
    "power_cycle",
    "power_reset",
    "power_soft",
    "set_boot_device",
    "get_sensors",
    "get_fru",
    "set_lan_config",
]
BootDevice = Literal["default", "network", "hd", "cdrom", "bios", "safe", "floppy", "usb"]

_POWER_CHANGES = ("power_on", "power_off", "power_cycle", "power_reset", "power_soft")
_LAN = ("ip_source", "ip_address", "netmask", "gateway")

#: The arguments each operation accepts besides ``operation``.
ALLOWED_ARGUMENTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_POWER_CHANGES, ("wait",)),
    "set_boot_device": ("boot_device", "persistent"),
    "set_lan_config": _LAN,
}


def _ipv4(value: object) -> object:
    try:
        ipaddress.IPv4Address(value if isinstance(value, str) else "")
    except ValueError:
        raise invalid(f"must be an IPv4 address such as 10.0.0.5, not {describe(value)}") from None
    return value


IPv4 = Annotated[str, BeforeValidator(_ipv4)]


class IPMIArguments(ActionArguments):
    """Arguments of ``ipmi``: one operation on the target's BMC and the arguments it takes."""

    operation: Operation = Field(
        description="power_status, power_on, power_off, power_cycle, power_reset, power_soft, "
        "set_boot_device, get_sensors, get_fru or set_lan_config"
    )
    wait: StrictBool | None = Field(
        default=None,
        description="power changes: wait until the BMC reports the new state (default true)",
    )
    boot_device: BootDevice | None = Field(
        default=None,
        description="set_boot_device: default, network, hd, cdrom, bios, safe, floppy or usb",
    )
    persistent: StrictBool | None = Field(
        default=None,
        description="set_boot_device: keep the device for every boot, not only the next one",
    )
    ip_source: Literal["static", "dhcp"] | None = Field(
        default=None, description="set_lan_config: static (default) or dhcp"
    )
    ip_address: IPv4 | None = Field(default=None, description="set_lan_config: the BMC address")
    netmask: IPv4 | None = Field(default=None, description="set_lan_config: the subnet mask")
    gateway: IPv4 | None = Field(default=None, description="set_lan_config: the default gateway")

    @model_validator(mode="after")
    def _fits_operation(self) -> IPMIArguments:
        allowed = ALLOWED_ARGUMENTS.get(self.operation, ())
        extra = sorted(self.model_fields_set - {"operation", *allowed})
        if extra:
            raise invalid(
                f"has arguments that {self.operation} does not take: {', '.join(extra)}",
                f"{self.operation} takes: {', '.join(allowed) or 'no other arguments'}",
            )
        if self.operation == "set_boot_device" and self.boot_device is None:
            raise invalid("needs 'boot_device' for set_boot_device")
        static = self.ip_source != "dhcp"
        if self.operation == "set_lan_config" and static and not (self.ip_address and self.netmask):
            raise invalid("needs 'ip_address' and 'netmask' for a static set_lan_config")
        if self.operation == "set_lan_config" and not static and self.ip_address:
            raise invalid("takes no 'ip_address' with ip_source: dhcp")
        return self

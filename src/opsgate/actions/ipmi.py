"""The ``ipmi`` action: power and boot control of a target through its BMC (pyghmi).

pyghmi is confined to this module (its blocking calls, its untyped API, its exceptions).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from pydantic import BeforeValidator, Field, StrictBool, model_validator
from pyghmi.constants import Health
from pyghmi.exceptions import IpmiException
from pyghmi.ipmi.command import Command

from opsgate.actions.base import Action, ActionArguments, StepContext, target_section
from opsgate.errors import StepError
from opsgate.inventory import BMCConnection
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
    "get_lan_config",
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
        "set_boot_device, get_sensors, get_fru, get_lan_config (reads only) or set_lan_config"
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


#: Blocking pyghmi calls in flight at once, over every execution of this process.
IPMI_THREADS = anyio.CapacityLimiter(8)

#: pyghmi's texts for credentials the BMC refused: a retry cannot fix them.
_AUTH_FAILURES = ("password", "unauthorized name", "privilege", "authentication")

_POWER_STATES = {
    "power_on": "on",
    "power_off": "off",
    "power_reset": "reset",
    "power_soft": "shutdown",
}


class IPMIAction(Action[IPMIArguments]):
    """One operation on the target's BMC through pyghmi (IPMI 2.0 / RMCP+).

    pyghmi blocks, so each operation runs in a worker thread, at most :data:`IPMI_THREADS` at a
    time. A cancelled or timed-out step stops waiting at once; the thread finishes its call
    (pyghmi's own timeouts bound it) and its result is dropped.
    """

    name = "ipmi"
    arguments = IPMIArguments
    changes_things = True
    description = "power and boot control through the BMC"
    needs_target = True
    uses_secrets = True

    async def run(self, args: IPMIArguments, ctx: StepContext) -> dict[str, Any]:
        name, bmc = _bmc(ctx)
        password = ctx.secret(bmc.password)
        await ctx.report(f"{args.operation} on the BMC of {name}")
        operation = partial(_perform, args, bmc, password)
        try:
            result = await anyio.to_thread.run_sync(
                operation, limiter=IPMI_THREADS, abandon_on_cancel=True
            )
        except IpmiException as exc:
            raise _translate(exc, name, bmc) from None
        return {"operation": args.operation, **result}


def _bmc(ctx: StepContext) -> tuple[str, BMCConnection]:
    example = "{address: ..., user: ..., password: env:...}"
    name, data = target_section(ctx, "bmc", "address", "ipmi", example)
    return name, BMCConnection.model_validate(data)


class _Sessions:
    """pyghmi sessions by BMC, reused for the life of the process.

    pyghmi keeps one session per BMC and user internally: a second ``Command`` for a BMC whose
    session is alive hangs, and one created after a logout fails. So each BMC gets one
    ``Command``, used by one thread at a time, and forgotten when a call on it fails other
    than by the BMC's refusal (a completion code).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._commands: dict[tuple[Any, ...], Command] = {}

    @contextmanager
    def use(self, bmc: BMCConnection, password: str) -> Iterator[Command]:
        # The password is part of the identity (a new one needs a new session), by digest only.
        digest = hashlib.sha256(password.encode()).hexdigest()
        key = (bmc.address, bmc.port, bmc.user, digest)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            command = self._commands.get(key)
            if command is None:
                command = Command(
                    bmc=bmc.address, userid=bmc.user, password=password, port=bmc.port
                )
                self._commands[key] = command
            try:
                yield command
            except IpmiException as exc:
                # A completion code (the BMC answered "no") leaves the session usable; anything
                # else (a timeout, a lost session) may have broken it.
                if not getattr(exc, "ipmicode", 0):
                    self._commands.pop(key, None)
                raise


SESSIONS = _Sessions()


def _perform(args: IPMIArguments, bmc: BMCConnection, password: str) -> dict[str, Any]:
    """The blocking part, in a worker thread: one operation on the BMC's session."""
    with SESSIONS.use(bmc, password) as ipmi:
        return _operate(ipmi, args)


def _operate(ipmi: Command, args: IPMIArguments) -> dict[str, Any]:
    wait = args.wait is not False
    operation = args.operation
    if operation == "power_status":
        return {"power": ipmi.get_power()["powerstate"]}
    if operation == "power_cycle":
        ipmi.set_power("off", wait=True)
        return {"power": ipmi.set_power("on", wait=wait).get("powerstate", "on")}
    if operation in _POWER_STATES:
        answer = ipmi.set_power(_POWER_STATES[operation], wait=wait)
        return {"power": answer.get("powerstate") or answer.get("pendingpowerstate")}
    if operation == "set_boot_device":
        persistent = bool(args.persistent)
        ipmi.set_bootdev(args.boot_device, persist=persistent)
        return {"boot_device": args.boot_device, "persistent": persistent}
    if operation == "get_sensors":
        return {"sensors": [_sensor(reading) for reading in ipmi.get_sensor_data()]}
    if operation == "get_fru":
        return {"fru": _plain(ipmi.get_inventory_of_component("System"))}
    if operation == "get_lan_config":
        return {"lan": _lan(ipmi.get_net_configuration(gateway_macs=False))}
    return {"lan": _set_lan(ipmi, args)}


def _lan(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """pyghmi's network configuration as ``ip_address``, ``netmask``, ``gateway`` (each None
    when unset) and ``ip_source`` (``static``, ``dhcp``, ``bios``, ``other`` or
    ``unspecified``), the names ``set_lan_config`` takes."""
    address = configuration.get("ipv4_address")
    interface = ipaddress.IPv4Interface(address) if address else None
    return {
        "ip_address": str(interface.ip) if interface else None,
        "netmask": str(interface.netmask) if interface else None,
        "gateway": configuration.get("ipv4_gateway"),
        "ip_source": str(configuration.get("ipv4_configuration") or "unspecified").lower(),
    }


#: LAN parameter 0, "set in progress": how a client brackets its changes (IPMI 2.0, 23.1).
_SET_IN_PROGRESS, _COMMIT_WRITE, _SET_COMPLETE = 1, 2, 0


def _set_lan(ipmi: Command, args: IPMIArguments) -> dict[str, Any]:
    """Set the LAN parameters inside "set in progress" and commit them, as the IPMI spec asks
    (BMCs that apply them only on commit, ipmi_sim among them, need it); a BMC without the
    parameter gets the changes directly."""
    channel = ipmi.get_network_channel()

    def progress(state: int) -> None:
        ipmi.xraw_command(netfn=0x0C, command=0x01, data=(channel, 0, state))

    try:
        progress(_SET_IN_PROGRESS)
        bracketed = True
    except IpmiException:
        bracketed = False
    try:
        if args.ip_source == "dhcp":
            ipmi.set_net_configuration(ipv4_configuration="DHCP", channel=channel)
        else:
            assert args.ip_address is not None and args.netmask is not None
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{args.netmask}").prefixlen
            ipmi.set_net_configuration(
                ipv4_address=f"{args.ip_address}/{prefix}",
                ipv4_configuration="Static",
                ipv4_gateway=args.gateway,
                channel=channel,
            )
        if bracketed:
            progress(_COMMIT_WRITE)
    finally:
        if bracketed:  # a failure above is the error to report, not this one
            with contextlib.suppress(IpmiException):
                progress(_SET_COMPLETE)
    configuration = ipmi.get_net_configuration(gateway_macs=False)
    return {key: value for key, value in configuration.items() if value is not None}


def _sensor(reading: Any) -> dict[str, Any]:
    return {
        "name": reading.name,
        "value": reading.value,
        "units": reading.units,
        "health": _health(reading.health),
        "states": list(reading.states),
    }


#: pyghmi's sensor health bits, worst first.
_HEALTH = (("failed", Health.Failed), ("critical", Health.Critical), ("warning", Health.Warning))


def _health(bits: int) -> str:
    """pyghmi's health bit mask (0 when fine) as the name of its worst state."""
    return next((name for name, bit in _HEALTH if bits & bit), "ok")


def _plain(value: Any) -> Any:
    """pyghmi's FRU data as JSON values (dates and bytes become text)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _translate(exc: IpmiException, name: str, bmc: BMCConnection) -> StepError:
    text = str(exc) if exc.args and exc.args[0] else ""
    where = f"the BMC of target {name!r} ({bmc.address}:{bmc.port})"
    if any(marker in text.lower() for marker in _AUTH_FAILURES):
        return StepError(
            f"{where} refused the credentials of user {bmc.user!r}: {text}; check the target's "
            "bmc.user and the password its reference points at",
            retryable=False,
            error_type="AuthenticationFailed",
        )
    if not text or "timeout" in text.lower() or "no longer connected" in text.lower():
        return StepError(
            f"{where} did not answer{f' ({text})' if text else ''}; check the address, the "
            "UDP port and that IPMI over LAN is enabled",
            retryable=True,
            error_type="Timeout",
        )
    return StepError(
        f"{where} refused the operation: {text}",
        retryable=False,
        error_type="IPMIError",
    )

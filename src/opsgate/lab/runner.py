"""The lab process (``python -m opsgate.lab.runner DIR --host NAME:GROUP ...``).

``opsgate lab up`` starts it in a session of its own. It holds ``DIR/lab.lock`` for its whole
life (a second lab on the same directory refuses to start), starts every service on
127.0.0.1, writes the inventory, known_hosts and ``state.json``, then waits for SIGTERM or
SIGINT and stops everything it started, BMC simulators included.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread

from opsgate.lab.bmc import LAB_EMULATOR, MISSING, ipmi_sim, start_bmc, stop_bmc
from opsgate.lab.files import install_tools, secret, ssh_key
from opsgate.lab.health import HealthHandler
from opsgate.lab.httpd import serve_in_thread
from opsgate.lab.inventory import BMC_USER, SSH_USER, write_inventory
from opsgate.lab.maas import MaaSState, Machine, maas_handler
from opsgate.lab.ssh import serve_ssh
from opsgate.lab.state import (
    ALREADY_RUNNING,
    LOCK_FILE,
    LabHost,
    LabState,
    clear_state,
    write_state,
)

logger = logging.getLogger("opsgate.lab")


def system_id(name: str) -> str:
    """A stable MaaS-style system id (six characters, unlike the host name, as in MaaS)."""
    return hashlib.sha256(name.encode()).hexdigest()[:6]


def _lock(directory: Path) -> IO[str] | None:
    """Hold ``lab.lock`` until the process ends; None if another lab holds it."""
    handle = (directory / LOCK_FILE).open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_bmc(process.pid)
    process.wait()


def boot_script(host: LabHost) -> str:
    """What a power-on of ``host``'s BMC does to the host: the firmware that ``fwutil update``
    flashed now runs, so nothing is pending any more."""
    return f"rm -f {shlex.quote(str(Path(host.sandbox) / 'firmware' / 'pending'))}\n"


async def _start_bmcs(stack: AsyncExitStack, directory: Path, hosts: list[LabHost]) -> None:
    # IPMI passwords have at most 16 characters in ipmi_sim (20 in IPMI 2.0).
    password = secret(directory / "secrets" / "bmc-password", length=16)
    for host in hosts:
        start = partial(
            start_bmc,
            emulator=LAB_EMULATOR,
            on_boot=boot_script(host),
            lan_fault=directory / "faults" / f"bmc-{host.name}.lan",
        )
        process, port = await anyio.to_thread.run_sync(
            start, directory / "bmc" / host.name, host.name, BMC_USER, password
        )
        stack.callback(_stop, process)
        host.bmc_port, host.bmc_pid = port, process.pid


async def run_lab(
    directory: Path, hosts: Sequence[tuple[str, list[str]]], commission: float
) -> None:
    """Serve the lab from ``directory`` until SIGTERM or SIGINT."""
    client_key = ssh_key(directory / "keys" / "deploy")
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as stack:
            stack.callback(clear_state, directory)
            lab_hosts, known_hosts = [], []
            (directory / "logs").mkdir(exist_ok=True)
            for name, groups in hosts:
                sandbox = directory / "hosts" / name
                install_tools(sandbox)
                log = directory / "logs" / f"{name}.commands"
                server = await stack.enter_async_context(
                    serve_ssh(
                        sandbox,
                        {SSH_USER: None},
                        host_key=ssh_key(directory / "keys" / f"host-{name}"),
                        client_key=client_key,
                        command_log=log,
                    )
                )
                known_hosts.append(server.known_hosts_line())
                lab_hosts.append(
                    LabHost(
                        name=name,
                        groups=groups,
                        ssh_port=server.port,
                        sandbox=str(sandbox),
                        command_log=str(log),
                        maas_system_id=system_id(name),
                    )
                )
            bmc_note = MISSING if ipmi_sim() is None else None
            if bmc_note is None:
                await _start_bmcs(stack, directory, lab_hosts)
            api_key_file = directory / "secrets" / "maas-api-key"
            machines = {
                host.maas_system_id: Machine(host.maas_system_id, host.name, "127.0.0.1")
                for host in lab_hosts
            }
            maas = MaaSState(
                machines,
                secret(api_key_file),
                commission_seconds=commission,
                faults=directory / "faults",
            )
            maas_url = stack.enter_context(serve_in_thread(maas_handler(maas)))
            health_url = stack.enter_context(serve_in_thread(HealthHandler.for_lab(directory)))
            (directory / "known_hosts").write_text("".join(known_hosts))
            write_inventory(directory / "inventory.yaml", lab_hosts, health_url)
            state = LabState(
                pid=os.getpid(),
                directory=str(directory),
                inventory=str(directory / "inventory.yaml"),
                known_hosts=str(directory / "known_hosts"),
                hosts=lab_hosts,
                maas_url=f"{maas_url}/MAAS/api/2.0/",
                maas_api_key_file=str(api_key_file),
                health_url=health_url,
                bmc_note=bmc_note,
            )
            write_state(directory, state)
            logger.info("lab up: %s", state.model_dump_json())
            async for received in signals:
                logger.info("lab stopping on signal %s", signal.Signals(received).name)
                break


def _host(spec: str) -> tuple[str, list[str]]:
    name, _, groups = spec.partition(":")
    if not name or not groups:
        raise argparse.ArgumentTypeError(f"{spec!r} is not NAME:GROUP[+GROUP...]")
    return name, groups.split("+")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m opsgate.lab.runner")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", type=_host, action="append", required=True)
    parser.add_argument("--commission-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    directory: Path = args.directory.resolve()
    lock = _lock(directory)
    if lock is None:
        logger.error("another lab runs from %s: stop it with `opsgate lab down`", directory)
        sys.exit(ALREADY_RUNNING)
    with lock:
        anyio.run(run_lab, directory, args.host, args.commission_seconds)


if __name__ == "__main__":
    main()

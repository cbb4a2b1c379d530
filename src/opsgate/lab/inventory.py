"""The inventory and known_hosts the lab writes for opsgate (format of docs/inventory.md).

Every credential is a ``file:`` reference relative to the inventory's folder; no secret is
written into the inventory itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from opsgate.lab.state import LabHost

HEADER = """\
# Written by `opsgate lab up`: the lab's hosts on 127.0.0.1, rewritten on every start (the
# ports change). Credentials are file: references relative to this folder.
"""
SSH_USER = "deploy"
BMC_USER = "admin"


def inventory_document(hosts: list[LabHost], health_url: str) -> dict[str, Any]:
    """The inventory of ``hosts``; hosts with a BMC are also in group ``bmc``. Every host's
    label ``health_url`` is the lab's health endpoint (its service's health, as blueprints
    that verify a service read it)."""
    targets: dict[str, Any] = {}
    for host in hosts:
        target: dict[str, Any] = {
            "address": "127.0.0.1",
            "groups": [*host.groups, *(["bmc"] if host.bmc_port else [])],
            "labels": {
                "lab": "true",
                "maas_system_id": host.maas_system_id,
                "health_url": f"{health_url}/healthz",
            },
            "ssh": {
                "port": host.ssh_port,
                "user": SSH_USER,
                "key": "file:keys/deploy",
                "known_hosts": "known_hosts",
            },
        }
        if host.bmc_port:
            target["bmc"] = {
                "address": "127.0.0.1",
                "port": host.bmc_port,
                "user": BMC_USER,
                "password": "file:secrets/bmc-password",
            }
        targets[host.name] = target
    return {"targets": targets}


def write_inventory(path: Path, hosts: list[LabHost], health_url: str) -> None:
    yaml = YAML()
    yaml.default_flow_style = False
    with path.open("w") as stream:
        stream.write(HEADER)
        yaml.dump(inventory_document(hosts, health_url), stream)

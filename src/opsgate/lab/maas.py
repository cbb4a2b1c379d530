"""A MaaS-compatible HTTP API (the 2.0 paths server provisioning uses), state in memory.

Routes, under ``/MAAS/api/2.0``, as MaaS spells them (form or JSON bodies; ``op`` in the
query or the body):

``GET  machines/``                      every machine
``GET  machines/{system_id}/``          one: ``status_name``, ``ip_addresses``, ``tag_names``
``POST machines/{system_id}/?op=commission``
                                        ``New``, ``Ready`` or ``Failed commissioning`` →
                                        ``Commissioning``, then ``Ready`` (with its IP
                                        address) ``commission_seconds`` later
``GET  tags/``                          every tag;  ``POST tags/`` (``name``) creates one
``POST tags/{name}/?op=update_nodes``   ``add`` / ``remove`` system ids

Unlike MaaS (OAuth 1.0 PLAINTEXT), every request must carry ``Authorization: Bearer KEY``.
Errors are MaaS's status codes with a text body that says what to do.

Fault switches: while ``FAULTS/maas.OPERATION`` exists (``read``: every GET, ``commission``,
``tag``: creating a tag or adding machines to one, ``untag``: removing machines from one),
that operation is refused with 500 and a body naming the switch, before anything changes.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opsgate.lab.files import injected_fault
from opsgate.lab.httpd import QuietHandler

PREFIX = "/MAAS/api/2.0/"
COMMISSIONABLE = frozenset({"New", "Ready", "Failed commissioning"})


@dataclass
class Machine:
    """One machine as MaaS describes it (the fields provisioning reads)."""

    system_id: str
    hostname: str
    address: str
    status_name: str = "New"
    tag_names: list[str] = field(default_factory=list)
    ready_at: float | None = None

    def view(self, now: float) -> dict[str, Any]:
        if self.status_name == "Commissioning" and self.ready_at is not None:
            if now >= self.ready_at:
                self.status_name = "Ready"
        ready = self.status_name == "Ready"
        return {
            "system_id": self.system_id,
            "hostname": self.hostname,
            "status_name": self.status_name,
            "ip_addresses": [self.address] if ready else [],
            "tag_names": sorted(self.tag_names),
            "power_type": "ipmi",
            "resource_uri": f"{PREFIX}machines/{self.system_id}/",
        }


class MaaSError(Exception):
    """A request MaaS refuses: its status and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class MaaSState:
    """The machines and tags, behind one lock (the server answers from several threads)."""

    machines: dict[str, Machine]
    api_key: str
    commission_seconds: float = 1.0
    tags: set[str] = field(default_factory=set)
    faults: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse_if_faulty(self, operation: str) -> None:
        """Raise the injected fault of ``operation`` while its switch exists."""
        message = injected_fault(self.faults, f"maas.{operation}")
        if message is not None:
            raise MaaSError(500, f"maas: injected fault (maas.{operation}): {message}")

    def machine(self, system_id: str) -> Machine:
        if system_id not in self.machines:
            known = ", ".join(sorted(self.machines))
            raise MaaSError(404, f"No machine with system_id {system_id!r}; known: {known}.")
        return self.machines[system_id]

    def handle(self, method: str, route: list[str], form: dict[str, list[str]]) -> Any:
        now = time.monotonic()
        op = (form.get("op") or [""])[0]
        self.refuse_if_faulty(_operation(method, route, op, form))
        with self.lock:
            match method, route, op:
                case "GET", ["machines"], _:
                    return [m.view(now) for m in self.machines.values()]
                case "GET", ["machines", system_id], _:
                    return self.machine(system_id).view(now)
                case "POST", ["machines", system_id], "commission":
                    return self.commission(self.machine(system_id), now)
                case "GET", ["tags"], _:
                    return [{"name": name} for name in sorted(self.tags)]
                case "POST", ["tags"], _:
                    return self.create_tag((form.get("name") or [""])[0])
                case "POST", ["tags", name], "update_nodes":
                    return self.update_nodes(name, form.get("add", []), form.get("remove", []))
        raise MaaSError(404, f"{method} {PREFIX}{'/'.join(route)}/ (op={op!r}) is not served.")

    def commission(self, machine: Machine, now: float) -> dict[str, Any]:
        machine.view(now)  # settles a finished commissioning first
        if machine.status_name not in COMMISSIONABLE:
            raise MaaSError(
                409,
                f"Machine {machine.system_id} is {machine.status_name}; commission it once it "
                f"is one of {', '.join(sorted(COMMISSIONABLE))}.",
            )
        machine.status_name = "Commissioning"
        machine.ready_at = now + self.commission_seconds
        return machine.view(now)

    def create_tag(self, name: str) -> dict[str, str]:
        if not name:
            raise MaaSError(400, "A tag needs a name: POST tags/ with name=NAME.")
        self.tags.add(name)
        return {"name": name}

    def update_nodes(self, name: str, add: list[str], remove: list[str]) -> dict[str, int]:
        if name not in self.tags:
            raise MaaSError(404, f"No tag {name!r}: create it first (POST tags/ name={name}).")
        for system_id in [*add, *remove]:
            self.machine(system_id)
        for system_id in add:
            if name not in self.machines[system_id].tag_names:
                self.machines[system_id].tag_names.append(name)
        for system_id in remove:
            if name in self.machines[system_id].tag_names:
                self.machines[system_id].tag_names.remove(name)
        return {"added": len(add), "removed": len(remove)}


def _operation(method: str, route: list[str], op: str, form: dict[str, list[str]]) -> str:
    """The fault switch name of a request: read, commission, tag or untag."""
    if method == "GET":
        return "read"
    if op == "commission":
        return "commission"
    return "untag" if route[:1] == ["tags"] and form.get("remove") else "tag"


def _form(handler: QuietHandler, query: str) -> dict[str, list[str]]:
    """Query and body fields together; the body form-encoded (as MaaS clients send) or JSON."""
    form = parse_qs(query)
    body = handler.read_body()
    if handler.headers.get("Content-Type", "").startswith("application/json") and body:
        loaded = json.loads(body)
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        for key, value in loaded.items():
            form.setdefault(key, []).extend(value if isinstance(value, list) else [str(value)])
    else:
        for key, values in parse_qs(body).items():
            form.setdefault(key, []).extend(values)
    return form


def maas_handler(state: MaaSState) -> type[QuietHandler]:
    """The request handler class serving ``state``."""

    class Handler(QuietHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            if self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self.answer(401, b"Send Authorization: Bearer KEY (the lab's maas-api-key).")
                return
            if not parts.path.startswith(PREFIX):
                self.answer(404, f"The API lives under {PREFIX}.".encode())
                return
            route = [part for part in parts.path.removeprefix(PREFIX).split("/") if part]
            try:
                self.answer_json(200, state.handle(self.command, route, _form(self, parts.query)))
            except MaaSError as exc:
                self.answer(exc.status, str(exc).encode())
            except ValueError:
                self.answer(400, b"The body is neither form-encoded fields nor a JSON object.")

        do_GET = do_POST = _handle

    return Handler

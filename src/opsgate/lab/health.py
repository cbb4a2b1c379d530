"""The lab's HTTP service: health, datasets and webhook sinks, state in memory.

What ``health_check`` and ``http`` steps talk to (``http_health_probe``, ``data_pipeline``,
``notification_flow`` and ``security_audit`` run against it). Routes:

``GET  /healthz``                 200 ``{"status": "ok"}``
``GET  /version``                 200 ``{"version": ...}``
``GET  /data``                    ``{"datasets": {name: record count}}``
``GET  /data/{dataset}``          ``{"dataset", "count", "records"}``; 404 for an unknown one
``PUT  /data/{dataset}``          a JSON array of objects replaces the dataset (creates it):
                                  ``{"dataset", "count", "replaced"}`` (the previous count or null)
``DELETE /data/{dataset}``        ``{"dataset", "deleted"}``; 404 for an unknown one
``GET  /hooks``                   ``{"hooks": {name: delivery count}}``
``POST /hooks/{name}``            records the body (JSON when sent as JSON) and the headers:
                                  ``{"hook", "sequence", "duplicate"}``; a second post with an
                                  ``Idempotency-Key`` already recorded is answered but not recorded
``GET  /hooks/{name}``            ``{"hook", "count", "attempts", "refused", "deliveries"}``
``DELETE /hooks/{name}``          forgets its deliveries and pending failures
``POST /hooks/{name}/fail?count=N[&status=503]``
                                  the next N posts to the hook are refused with that status

Datasets seeded at each start: ``orders`` (clean), ``orders_dirty`` (the same shape with bad
rows for validation) and ``customers``. Names are ``[a-z0-9][a-z0-9_-]*`` (at most 64).

Fault switches (docs/lab.md): while ``<lab dir>/faults/http.<operation>`` exists, that
operation answers 500 naming the fault, before changing anything. Operations: ``get_data``,
``put_data``, ``delete_data``, ``post_hook``, ``get_hook``, ``delete_hook``.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from opsgate import __version__
from opsgate.lab.files import injected_fault
from opsgate.lab.httpd import QuietHandler

SERVICE = "http"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: Statuses ``/hooks/{name}/fail`` may make a hook answer.
FAIL_STATUSES = frozenset({429, 500, 502, 503, 504})


def seed_datasets() -> dict[str, list[dict[str, Any]]]:
    """The datasets every lab starts with (fresh copies)."""
    orders = [
        {
            "id": 1001,
            "customer": "acme",
            "amount": 120.5,
            "currency": "EUR",
            "created": "2026-03-01",
        },
        {
            "id": 1002,
            "customer": "globex",
            "amount": 80.0,
            "currency": "USD",
            "created": "2026-03-02",
        },
        {
            "id": 1003,
            "customer": "initech",
            "amount": 42.25,
            "currency": "EUR",
            "created": "2026-03-02",
        },
        {
            "id": 1004,
            "customer": "acme",
            "amount": 310.0,
            "currency": "GBP",
            "created": "2026-03-03",
        },
        {
            "id": 1005,
            "customer": "umbrella",
            "amount": 15.75,
            "currency": "USD",
            "created": "2026-03-04",
        },
    ]
    dirty = [
        *copy.deepcopy(orders[:3]),
        # Bad rows: a missing customer, a negative amount, an amount that is text, and an
        # unknown currency.
        {"id": 2001, "amount": 10.0, "currency": "EUR", "created": "2026-03-05"},
        {
            "id": 2002,
            "customer": "hooli",
            "amount": -5.0,
            "currency": "USD",
            "created": "2026-03-05",
        },
        {
            "id": 2003,
            "customer": "hooli",
            "amount": "12,50",
            "currency": "EUR",
            "created": "2026-03-06",
        },
        {
            "id": 2004,
            "customer": "vandelay",
            "amount": 99.0,
            "currency": "XXX",
            "created": "2026-03-06",
        },
    ]
    customers = [
        {"id": "acme", "name": "Acme Corp", "country": "DE"},
        {"id": "globex", "name": "Globex", "country": "US"},
        {"id": "initech", "name": "Initech", "country": "US"},
        {"id": "umbrella", "name": "Umbrella", "country": "GB"},
    ]
    return {"orders": orders, "orders_dirty": dirty, "customers": customers}


class ServiceError(Exception):
    """A request the service refuses: its status and a message that says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Hook:
    """What one webhook sink received."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    refused: int = 0
    failing: int = 0
    fail_status: int = 503

    def view(self, name: str) -> dict[str, Any]:
        return {
            "hook": name,
            "count": len(self.deliveries),
            "attempts": self.attempts,
            "refused": self.refused,
            "deliveries": copy.deepcopy(self.deliveries),
        }


@dataclass
class HTTPState:
    """Datasets and hooks behind one lock (the server answers from several threads).

    ``faults`` is the lab's fault-switch folder (``<lab dir>/faults``), or None for no
    switches."""

    faults: Path | None = None
    datasets: dict[str, list[dict[str, Any]]] = field(default_factory=seed_datasets)
    hooks: dict[str, Hook] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check_fault(self, operation: str) -> None:
        text = injected_fault(self.faults, f"{SERVICE}.{operation}")
        if text is not None:
            raise ServiceError(500, f"{SERVICE}: injected fault ({operation}): {text}")

    def handle(
        self,
        method: str,
        route: list[str],
        query: dict[str, list[str]],
        body: str,
        headers: dict[str, str],
    ) -> Any:
        with self.lock:
            match method, route:
                case "GET", ["data"]:
                    return {"datasets": {n: len(r) for n, r in sorted(self.datasets.items())}}
                case "GET", ["data", name]:
                    self.check_fault("get_data")
                    records = self.datasets.get(_name(name, "dataset"))
                    if records is None:
                        raise ServiceError(404, f"No dataset {name!r}; known: {self._known()}.")
                    return {
                        "dataset": name,
                        "count": len(records),
                        "records": copy.deepcopy(records),
                    }
                case "PUT", ["data", name]:
                    _name(name, "dataset")
                    records = _records(body)
                    self.check_fault("put_data")
                    previous = self.datasets.get(name)
                    self.datasets[name] = records
                    replaced = None if previous is None else len(previous)
                    return {"dataset": name, "count": len(records), "replaced": replaced}
                case "DELETE", ["data", name]:
                    if _name(name, "dataset") not in self.datasets:
                        raise ServiceError(404, f"No dataset {name!r}; known: {self._known()}.")
                    self.check_fault("delete_data")
                    return {"dataset": name, "deleted": len(self.datasets.pop(name))}
                case "GET", ["hooks"]:
                    return {"hooks": {n: len(h.deliveries) for n, h in sorted(self.hooks.items())}}
                case "POST", ["hooks", name]:
                    return self.deliver(_name(name, "hook"), body, headers)
                case "GET", ["hooks", name]:
                    self.check_fault("get_hook")
                    return self.hooks.get(_name(name, "hook"), Hook()).view(name)
                case "DELETE", ["hooks", name]:
                    self.check_fault("delete_hook")
                    hook = self.hooks.pop(_name(name, "hook"), Hook())
                    return {"hook": name, "cleared": len(hook.deliveries)}
                case "POST", ["hooks", name, "fail"]:
                    return self.make_fail(_name(name, "hook"), query)
        raise ServiceError(
            404, f"{method} /{'/'.join(route)} is not served; see /healthz, /data, /hooks."
        )

    def _known(self) -> str:
        return ", ".join(sorted(self.datasets)) or "none"

    def deliver(self, name: str, body: str, headers: dict[str, str]) -> dict[str, Any]:
        self.check_fault("post_hook")
        hook = self.hooks.setdefault(name, Hook())
        hook.attempts += 1
        if hook.failing > 0:
            hook.failing -= 1
            hook.refused += 1
            raise ServiceError(
                hook.fail_status,
                f"hook {name!r} refuses this post (told to fail {hook.failing} more)",
            )
        content_type = headers.get("content-type", "")
        payload: Any = body
        if content_type.startswith("application/json"):
            try:
                payload = json.loads(body) if body else None
            except ValueError as exc:
                raise ServiceError(400, f"The body is not JSON: {exc}.") from exc
        key = headers.get("idempotency-key")
        if key is not None:
            for delivery in hook.deliveries:
                if delivery["headers"].get("idempotency-key") == key:
                    return {"hook": name, "sequence": delivery["sequence"], "duplicate": True}
        sequence = len(hook.deliveries) + 1
        hook.deliveries.append(
            {
                "sequence": sequence,
                "received_at": datetime.now(UTC).isoformat(),
                "headers": headers,
                "body": payload,
            }
        )
        return {"hook": name, "sequence": sequence, "duplicate": False}

    def make_fail(self, name: str, query: dict[str, list[str]]) -> dict[str, Any]:
        try:
            count = int((query.get("count") or ["1"])[0])
            status = int((query.get("status") or ["503"])[0])
        except ValueError as exc:
            raise ServiceError(400, "count and status must be integers.") from exc
        if count < 0 or status not in FAIL_STATUSES:
            allowed = ", ".join(map(str, sorted(FAIL_STATUSES)))
            raise ServiceError(400, f"count must be >= 0 and status one of {allowed}.")
        hook = self.hooks.setdefault(name, Hook())
        hook.failing, hook.fail_status = count, status
        return {"hook": name, "failing": count, "status": status}


def _name(name: str, kind: str) -> str:
    if _NAME.match(name) is None:
        raise ServiceError(
            400, f"{name!r} is not a {kind} name: use [a-z0-9][a-z0-9_-]*, 64 at most."
        )
    return name


def _records(body: str) -> list[dict[str, Any]]:
    try:
        records = json.loads(body) if body else None
    except ValueError as exc:
        raise ServiceError(400, f"The body is not JSON: {exc}.") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ServiceError(400, "Send the records as a JSON array of objects.")
    return records


class HealthHandler(QuietHandler):
    """Serves :class:`HTTPState`. Used as it is, it serves the state below (no fault switches);
    :meth:`for_lab` gives a handler with a fresh state and the lab's fault switches."""

    state: ClassVar[HTTPState] = HTTPState()

    @classmethod
    def for_lab(cls, directory: Path) -> type[HealthHandler]:
        """A handler class over a fresh state whose fault switches are ``directory/faults``."""
        return health_handler(HTTPState(faults=directory / "faults"))

    def do_GET(self) -> None:
        if not self._fixed():
            self._serve()

    def do_HEAD(self) -> None:
        if not self._fixed():
            self.answer(404, b"HEAD is served for /healthz and /version.")

    def _fixed(self) -> bool:
        """Answer ``/healthz`` and ``/version``; False for any other path."""
        answers = {"/healthz": {"status": "ok"}, "/version": {"version": __version__}}
        answer = answers.get(urlsplit(self.path).path)
        if answer is not None:
            self.answer_json(200, answer)
        return answer is not None

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        route = [part for part in parts.path.split("/") if part]
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            value = self.state.handle(self.command, route, parse_qs(parts.query), body, headers)
        except ServiceError as exc:
            self.answer(exc.status, str(exc).encode(), {"Content-Type": "text/plain"})
        else:
            self.answer_json(200, value)

    do_POST = do_PUT = do_DELETE = _serve


def health_handler(state: HTTPState) -> type[HealthHandler]:
    """A handler class serving ``state``."""
    return type("LabHTTPHandler", (HealthHandler,), {"state": state})

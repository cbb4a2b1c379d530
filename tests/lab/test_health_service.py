"""The lab's HTTP service over real HTTP: health, datasets, webhook sinks, fault switches.

Most tests serve a fresh :class:`HTTPState` in a thread (so each starts from the seeded
datasets); one starts a real lab and talks to the service of the lab process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opsgate import __version__
from opsgate.lab.health import HTTPState, health_handler
from opsgate.lab.httpd import serve_in_thread
from tests.lab.processes import lab_down, lab_up


@pytest.fixture
def faults(tmp_path: Path) -> Path:
    return tmp_path / "faults"


@pytest.fixture
def client(faults: Path) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(health_handler(HTTPState(faults=faults))) as url,
        httpx.Client(base_url=url, timeout=5) as http,
    ):
        yield http


def test_health_and_version_are_unchanged(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200
    assert client.get("/version").json() == {"version": __version__}
    assert client.get("/nowhere").status_code == 404


def test_seeded_datasets_are_listed_and_read(client: httpx.Client) -> None:
    assert client.get("/data").json() == {
        "datasets": {"customers": 4, "orders": 5, "orders_dirty": 7}
    }
    orders = client.get("/data/orders").json()
    assert orders["dataset"] == "orders" and orders["count"] == 5
    assert orders["records"][0] == {
        "id": 1001,
        "customer": "acme",
        "amount": 120.5,
        "currency": "EUR",
        "created": "2026-03-01",
    }
    dirty = client.get("/data/orders_dirty").json()["records"]
    assert [r["id"] for r in dirty if "customer" not in r] == [2001]
    assert any(isinstance(r["amount"], str) for r in dirty)
    missing = client.get("/data/nope")
    assert missing.status_code == 404 and "orders" in missing.text


def test_put_replaces_and_delete_removes_a_dataset(client: httpx.Client) -> None:
    created = client.put("/data/sales", json=[{"id": 1}, {"id": 2}])
    assert created.json() == {"dataset": "sales", "count": 2, "replaced": None}
    replaced = client.put("/data/sales", json=[{"id": 3}])
    assert replaced.json() == {"dataset": "sales", "count": 1, "replaced": 2}
    assert client.get("/data/sales").json()["records"] == [{"id": 3}]
    assert client.delete("/data/sales").json() == {"dataset": "sales", "deleted": 1}
    assert client.get("/data/sales").status_code == 404
    assert client.delete("/data/sales").status_code == 404


def test_bad_writes_are_refused_and_change_nothing(client: httpx.Client) -> None:
    assert client.put("/data/orders", content=b"not json").status_code == 400
    assert client.put("/data/orders", json={"id": 1}).status_code == 400
    assert client.put("/data/orders", json=[1, 2]).status_code == 400
    assert client.put("/data/Bad..Name", json=[]).status_code == 400
    assert client.get("/data/orders").json()["count"] == 5


def test_a_hook_records_bodies_and_headers_and_is_cleared(client: httpx.Client) -> None:
    first = client.post("/hooks/ops", json={"text": "hi"}, headers={"X-Severity": "warning"})
    assert first.json() == {"hook": "ops", "sequence": 1, "duplicate": False}
    client.post("/hooks/ops", content=b"plain", headers={"Content-Type": "text/plain"})
    received = client.get("/hooks/ops").json()
    assert received["count"] == 2 and received["attempts"] == 2 and received["refused"] == 0
    assert received["deliveries"][0]["body"] == {"text": "hi"}
    assert received["deliveries"][0]["headers"]["x-severity"] == "warning"
    assert received["deliveries"][1]["body"] == "plain"
    assert client.get("/hooks").json() == {"hooks": {"ops": 2}}
    assert client.delete("/hooks/ops").json() == {"hook": "ops", "cleared": 2}
    assert client.get("/hooks/ops").json()["count"] == 0
    assert client.get("/hooks/never").json()["deliveries"] == []


def test_a_hook_told_to_fail_refuses_the_next_posts(client: httpx.Client) -> None:
    assert client.post("/hooks/pager/fail", params={"count": 2}).json() == {
        "hook": "pager",
        "failing": 2,
        "status": 503,
    }
    statuses = [client.post("/hooks/pager", json={"n": n}).status_code for n in range(3)]
    assert statuses == [503, 503, 200]
    received = client.get("/hooks/pager").json()
    assert received["attempts"] == 3 and received["refused"] == 2
    assert [d["body"] for d in received["deliveries"]] == [{"n": 2}]
    client.post("/hooks/pager/fail", params={"count": 1, "status": 500})
    assert client.post("/hooks/pager", json={}).status_code == 500
    assert client.post("/hooks/pager/fail", params={"status": 200}).status_code == 400


def test_a_repeated_idempotency_key_is_answered_but_recorded_once(client: httpx.Client) -> None:
    key = {"Idempotency-Key": "run-1"}
    assert client.post("/hooks/once", json={"a": 1}, headers=key).json()["duplicate"] is False
    again = client.post("/hooks/once", json={"a": 1}, headers=key)
    assert again.status_code == 200 and again.json() == {
        "hook": "once",
        "sequence": 1,
        "duplicate": True,
    }
    assert client.get("/hooks/once").json()["count"] == 1


def test_fault_switches_refuse_before_changing_anything(client: httpx.Client, faults: Path) -> None:
    faults.mkdir()
    (faults / "http.put_data").write_text("disk full\n")
    refused = client.put("/data/orders", json=[])
    assert refused.status_code == 500
    assert "http: injected fault (put_data): disk full" in refused.text
    assert client.get("/data/orders").json()["count"] == 5
    (faults / "http.post_hook").write_text("down")
    assert client.post("/hooks/ops", json={}).status_code == 500
    (faults / "http.put_data").unlink()
    (faults / "http.post_hook").unlink()
    assert client.put("/data/orders", json=[]).status_code == 200
    assert client.get("/hooks/ops").json()["count"] == 0


def test_the_running_lab_serves_datasets_and_hooks(tmp_path: Path) -> None:
    directory = tmp_path / ".lab"
    lab = lab_up(directory, "--host=web-1:web", "--commission-seconds", "0")
    try:
        with httpx.Client(base_url=lab.health_url, timeout=5) as http:
            assert http.get("/data/orders").json()["count"] == 5
            assert http.put("/data/copy", json=[{"id": 1}]).status_code == 200
            assert http.get("/data/copy").json()["records"] == [{"id": 1}]
            assert http.post("/hooks/lab", json={"ok": True}).status_code == 200
            assert http.get("/hooks/lab").json()["deliveries"][0]["body"] == {"ok": True}
    finally:
        lab_down(directory)

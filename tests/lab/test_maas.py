"""The lab's MaaS-compatible API over real HTTP: commissioning, IP address, tags, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opsgate.lab.httpd import serve_in_thread
from opsgate.lab.maas import PREFIX, MaaSState, Machine, maas_handler

KEY = "lab-key-123"


def api(commission_seconds: float) -> Iterator[httpx.Client]:
    state = MaaSState(
        {"abc123": Machine("abc123", "web-1", "127.0.0.1")},
        KEY,
        commission_seconds=commission_seconds,
    )
    with (
        serve_in_thread(maas_handler(state)) as url,
        httpx.Client(
            base_url=f"{url}{PREFIX}", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        ) as client,
    ):
        yield client


@pytest.fixture
def maas() -> Iterator[httpx.Client]:
    """Commissioning ends at once (the next read sees Ready)."""
    yield from api(0)


@pytest.fixture
def slow_maas() -> Iterator[httpx.Client]:
    """Commissioning lasts an hour."""
    yield from api(3600)


def test_commission_then_tag_a_machine(maas: httpx.Client) -> None:
    before = maas.get("machines/abc123/").json()
    assert (before["status_name"], before["ip_addresses"]) == ("New", [])
    assert maas.post("machines/abc123/", params={"op": "commission"}).status_code == 200
    ready = maas.get("machines/abc123/").json()
    assert (ready["status_name"], ready["ip_addresses"]) == ("Ready", ["127.0.0.1"])
    assert maas.post("tags/", data={"name": "provisioned"}).json() == {"name": "provisioned"}
    tagged = maas.post("tags/provisioned/", data={"op": "update_nodes", "add": "abc123"})
    assert tagged.json() == {"added": 1, "removed": 0}
    assert maas.get("machines/").json()[0]["tag_names"] == ["provisioned"]
    maas.post("tags/provisioned/?op=update_nodes", json={"remove": ["abc123"]})
    assert maas.get("machines/abc123/").json()["tag_names"] == []
    assert maas.get("tags/").json() == [{"name": "provisioned"}]


def test_a_machine_is_commissioning_until_its_time_is_up(slow_maas: httpx.Client) -> None:
    started = slow_maas.post("machines/abc123/?op=commission").json()
    assert (started["status_name"], started["ip_addresses"]) == ("Commissioning", [])
    again = slow_maas.post("machines/abc123/?op=commission")
    assert again.status_code == 409
    assert "is Commissioning; commission it once it is one of" in again.text


def test_requests_without_the_key_are_refused(maas: httpx.Client) -> None:
    for key in (None, "wrong"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        refused = httpx.get(f"{maas.base_url}machines/", headers=headers)
        assert refused.status_code == 401
        assert "Authorization: Bearer KEY" in refused.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "machines/zzz999/", None, 404, "No machine with system_id 'zzz999'; known: abc123"),
        ("POST", "machines/zzz999/?op=commission", None, 404, "No machine with system_id"),
        ("POST", "tags/ghost/?op=update_nodes", {"add": "abc123"}, 404, "create it first"),
        ("POST", "tags/", {}, 400, "A tag needs a name"),
        ("POST", "machines/abc123/?op=deploy", None, 404, "(op='deploy') is not served"),
        ("GET", "/elsewhere", None, 404, "The API lives under /MAAS/api/2.0/"),
    ],
)
def test_refusals_say_what_to_do(
    maas: httpx.Client,
    method: str,
    path: str,
    body: dict[str, str] | None,
    status: int,
    message: str,
) -> None:
    url = str(maas.base_url.copy_with(path=path)) if path.startswith("/") else path
    answer = maas.request(method, url, data=body)
    assert answer.status_code == status
    assert message in answer.text


def test_tagging_an_unknown_machine_adds_the_tag_nowhere(maas: httpx.Client) -> None:
    maas.post("tags/", data={"name": "rack-1"})
    refused = maas.post("tags/rack-1/?op=update_nodes", data={"add": ["abc123", "nope"]})
    assert refused.status_code == 404
    assert maas.get("machines/abc123/").json()["tag_names"] == []


def test_a_body_that_is_not_a_json_object_is_a_bad_request(maas: httpx.Client) -> None:
    answer = maas.post("tags/", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "neither form-encoded fields nor a JSON object" in answer.text


@pytest.fixture
def faulty_maas(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """The API with a fault switch folder (the lab's ``faults/``)."""
    state = MaaSState({"abc123": Machine("abc123", "web-1", "127.0.0.1")}, KEY, 0, faults=tmp_path)
    with (
        serve_in_thread(maas_handler(state)) as url,
        httpx.Client(
            base_url=f"{url}{PREFIX}", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        ) as client,
    ):
        yield client, tmp_path


def test_fault_switches_refuse_their_operation_before_anything_changes(
    faulty_maas: tuple[httpx.Client, Path],
) -> None:
    maas, faults = faulty_maas
    (faults / "maas.commission").write_text("PXE server down\n")
    refused = maas.post("machines/abc123/", params={"op": "commission"})
    assert refused.status_code == 500
    assert refused.text == "maas: injected fault (maas.commission): PXE server down"
    assert maas.get("machines/abc123/").json()["status_name"] == "New"
    (faults / "maas.commission").unlink()
    assert maas.post("machines/abc123/", params={"op": "commission"}).status_code == 200

    (faults / "maas.tag").write_text("tags locked\n")
    assert maas.post("tags/", data={"name": "rack-1"}).status_code == 500
    assert maas.get("tags/").json() == []
    (faults / "maas.tag").unlink()
    maas.post("tags/", data={"name": "rack-1"}).raise_for_status()
    maas.post("tags/rack-1/", data={"op": "update_nodes", "add": "abc123"}).raise_for_status()

    (faults / "maas.untag").write_text("tags locked\n")
    removing = maas.post("tags/rack-1/", data={"op": "update_nodes", "remove": "abc123"})
    assert removing.status_code == 500 and "maas.untag" in removing.text
    assert maas.get("machines/abc123/").json()["tag_names"] == ["rack-1"]

    (faults / "maas.read").write_text("database busy\n")
    assert maas.get("machines/").status_code == 500

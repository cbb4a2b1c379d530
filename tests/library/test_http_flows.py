"""``data_pipeline`` and ``notification_flow`` end to end against the lab's HTTP service.

Effects are read back from the service itself (``/data/{dataset}``, ``/hooks/{name}``). Each
test uses its own dataset and hook names and deletes them at the end, so the tests share the
module's lab without seeing each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from opsgate.lab import LabState
from tests.library.harness import (
    Library,
    errors,
    hook_url,
    lab_snapshot,
    service_fault,
    step,
)

pytestmark = pytest.mark.anyio

LAB_HOSTS = ("web-1:web",)

#: The example parameters of docs/blueprint-library.md (plus the lab's URLs).
ORDER_RULES: dict[str, Any] = {
    "dataset": "orders",
    "fields": ["id", "customer", "amount", "currency", "created"],
    "required_fields": ["id", "customer", "amount", "currency", "created"],
    "numeric_fields": ["amount"],
    "uppercase_fields": ["currency"],
    "allowed_values": {"currency": ["EUR", "USD", "GBP"]},
}


def pipeline(lab: LabState, destination: str, **more: Any) -> dict[str, Any]:
    """data_pipeline's parameters: the example's rules on the lab's ``orders``, into
    ``destination``, with ``more`` on top."""
    return {"source_url": lab.health_url, **ORDER_RULES, "destination": destination, **more}


@pytest.fixture
async def service(lab: LabState) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=lab.health_url, timeout=5) as client:
        yield client


def transformed(records: list[dict[str, Any]], execution_id: str) -> list[dict[str, Any]]:
    """What the pipeline must load: the example's transformation, written independently."""
    fields = ORDER_RULES["fields"]
    return [
        {
            **{f: r[f] for f in fields},
            "amount": round(float(r["amount"]), 2),
            "_source": "orders",
            "_batch": execution_id,
        }
        for r in records
    ]


async def everything(service: httpx.AsyncClient) -> dict[str, Any]:
    """Every dataset of the service with its records."""
    names = (await service.get("/data")).json()["datasets"]
    return {name: (await service.get(f"/data/{name}")).json()["records"] for name in names}


# data_pipeline ------------------------------------------------------------------------------


async def test_pipeline_loads_exactly_the_transformed_records(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    params = pipeline(lab, "orders_clean", notify_url=hook_url(lab, "orders-loaded"))
    try:
        view = await library.run("data_pipeline", params)
        assert view.status == "succeeded", errors(view)
        assert step(view, "load_production").status == "skipped"  # staging: no gate
        source = (await service.get("/data/orders")).json()["records"]
        loaded = (await service.get("/data/orders_clean")).json()
        assert loaded["records"] == transformed(source, view.execution_id)
        assert loaded["count"] == 5
        assert (await service.get("/data/orders_clean_quarantine")).status_code == 404
        told = (await service.get("/hooks/orders-loaded")).json()
        assert told["count"] == 1
        assert told["deliveries"][0]["body"] == {
            "event": "dataset.loaded",
            "dataset": "orders_clean",
            "source": f"{lab.health_url}/data/orders",
            "environment": "staging",
            "records": 5,
            "quarantined": 0,
            "execution": view.execution_id,
        }
    finally:
        await service.delete("/data/orders_clean")
        await service.delete("/hooks/orders-loaded")


async def test_bad_rows_fail_validation_before_anything_is_loaded(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    before = await everything(service)
    params = pipeline(
        lab, "orders_dirty_clean", dataset="orders_dirty", notify_url=hook_url(lab, "dirty-loaded")
    )
    view = await library.run("data_pipeline", params)
    # Nothing was written; the rollback plan only records that the run was stopped.
    assert view.status == "rolled_back", errors(view)
    validate = step(view, "validate")
    assert validate.status == "failed"
    message = validate.runs[0].error["message"]
    assert "4 bad of 7 rows" in message
    for problem in (
        "id 2001): customer is missing",
        "id 2002): amount is not a number >= 0: -5.0",
        "id 2003): amount is not a number >= 0: '12,50'",
        "id 2004): currency 'XXX' is not one of",
    ):
        assert problem in message
    for later in ("backup", "load", "load_production", "notify"):
        assert step(view, later).runs == [] or step(view, later).status == "pending"
    assert await everything(service) == before
    assert (await service.get("/hooks/dirty-loaded")).json()["attempts"] == 0


async def test_quarantine_loads_the_good_rows_and_keeps_the_bad_ones(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    params = pipeline(lab, "orders_q", dataset="orders_dirty", on_bad_rows="quarantine")
    try:
        view = await library.run("data_pipeline", params)
        assert view.status == "succeeded", errors(view)
        assert step(view, "notify").status == "skipped"  # no notify_url
        loaded = (await service.get("/data/orders_q")).json()["records"]
        assert [r["id"] for r in loaded] == [1001, 1002, 1003]
        quarantined = (await service.get("/data/orders_q_quarantine")).json()["records"]
        assert [(bad["row"], bad["id"]) for bad in quarantined] == [
            (3, 2001),
            (4, 2002),
            (5, 2003),
            (6, 2004),
        ]
        assert quarantined[0]["problems"] == ["customer is missing"]
    finally:
        await service.delete("/data/orders_q")
        await service.delete("/data/orders_q_quarantine")


async def test_a_failure_after_the_load_puts_every_dataset_back(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    # The destination exists with other records (restored by PUT); the quarantine does not
    # (removed by DELETE). The consumers' webhook refuses every post, so the run fails at its
    # last write, after both loads.
    previous = [{"id": 1, "note": "yesterday's load"}]
    await service.put("/data/orders_rb", json=previous)
    await service.post("/hooks/rb-loaded/fail", params={"count": 100})
    before, sandboxes = await everything(service), lab_snapshot(lab)
    params = pipeline(
        lab,
        "orders_rb",
        dataset="orders_dirty",
        on_bad_rows="quarantine",
        notify_url=hook_url(lab, "rb-loaded"),
    )
    try:
        view = await library.run("data_pipeline", params)
        assert view.status == "rolled_back", errors(view)
        assert step(view, "notify").status == "failed"
        assert step(view, "notify").attempts == 3
        assert step(view, "load").status == "rolled_back"
        assert step(view, "quarantine").status == "rolled_back"
        assert await everything(service) == before
        assert (await service.get("/data/orders_rb")).json()["records"] == previous
        assert (await service.get("/data/orders_rb_quarantine")).status_code == 404
        assert lab_snapshot(lab) == sandboxes
    finally:
        await service.delete("/data/orders_rb")
        await service.delete("/hooks/rb-loaded")


async def test_a_production_load_waits_for_a_manager_and_a_refusal_changes_nothing(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    before = await everything(service)
    params = pipeline(lab, "orders_prod", environment="production")
    view = await library.run("data_pipeline", params, reject=frozenset({"load_production"}))
    assert view.status == "rolled_back", errors(view)
    assert step(view, "load").status == "skipped"
    assert step(view, "load_production").status == "failed"
    assert await everything(service) == before

    try:
        approved = await library.run("data_pipeline", params)
        assert approved.status == "succeeded", errors(approved)
        gate = [e for e in library.events(approved.execution_id) if e.type.startswith("approval")]
        assert gate, "the production load was not gated"
        assert (await service.get("/data/orders_prod")).json()["count"] == 5
    finally:
        await service.delete("/data/orders_prod")


async def test_a_load_the_service_refuses_ends_rolled_back_with_nothing_changed(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    before = await everything(service)
    with service_fault(lab, "http.put_data", "storage is read-only"):
        view = await library.run("data_pipeline", pipeline(lab, "orders_f"))
    assert view.status == "rolled_back", errors(view)
    load = step(view, "load")
    assert load.status == "failed" and load.attempts == 3
    assert "injected fault (put_data): storage is read-only" in load.runs[0].error["message"]
    assert await everything(service) == before


# notification_flow --------------------------------------------------------------------------


async def test_a_notification_reaches_every_webhook_once(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    hooks = ["ops", "oncall"]
    params = {
        "webhooks": [hook_url(lab, name) for name in hooks],
        "title": "Deploy of api 2.4.1 finished",
        "message": "api 2.4.1 runs on web-1 and web-2; $(no) `shell` here",
        "severity": "warning",
        "source": "deploy-pipeline",
        "confirm": True,
    }
    try:
        view = await library.run("notification_flow", params)
        assert view.status == "succeeded", errors(view)
        for name in hooks:
            received = (await service.get(f"/hooks/{name}")).json()
            assert received["count"] == 1 and received["attempts"] == 1
            delivery = received["deliveries"][0]
            body, headers = delivery["body"], delivery["headers"]
            assert body["text"] == (
                "[WARNING] Deploy of api 2.4.1 finished: "
                "api 2.4.1 runs on web-1 and web-2; $(no) `shell` here"
            )
            assert body["severity"] == "warning" and body["source"] == "deploy-pipeline"
            assert body["execution"] == view.execution_id and body["requested_by"] == "alice"
            assert headers["x-opsgate-severity"] == "warning"
            assert headers["content-type"] == "application/json"
            assert headers["idempotency-key"] == f"{view.execution_id}:{hook_url(lab, name)}"
    finally:
        for name in hooks:
            await service.delete(f"/hooks/{name}")


async def test_retries_after_503s_deliver_exactly_once(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    await service.post("/hooks/flaky/fail", params={"count": 2})
    params = {
        "webhooks": [hook_url(lab, "flaky"), hook_url(lab, "steady")],
        "title": "disk almost full",
        "message": "db-1 / is 91% full",
        "severity": "critical",
        "confirm": True,
    }
    try:
        view = await library.run("notification_flow", params)
        assert view.status == "succeeded", errors(view)
        runs = {run.item_key: run for run in step(view, "send").runs}
        assert sorted(run.attempts for run in runs.values()) == [1, 3]
        flaky = (await service.get("/hooks/flaky")).json()
        assert (flaky["attempts"], flaky["refused"], flaky["count"]) == (3, 2, 1)
        assert (await service.get("/hooks/steady")).json()["count"] == 1
    finally:
        await service.delete("/hooks/flaky")
        await service.delete("/hooks/steady")


async def test_a_webhook_that_keeps_failing_fails_the_flow(
    library: Library, lab: LabState, service: httpx.AsyncClient
) -> None:
    await service.post("/hooks/dead/fail", params={"count": 100, "status": 500})
    params = {
        "webhooks": [hook_url(lab, "dead")],
        "title": "t",
        "message": "m",
    }
    try:
        view = await library.run("notification_flow", params)
        # A notification cannot be unsent: nothing to roll back, the run just fails.
        assert view.status == "failed", errors(view)
        assert step(view, "send").attempts == 5
        dead = (await service.get("/hooks/dead")).json()
        assert (dead["attempts"], dead["count"]) == (5, 0)
    finally:
        await service.delete("/hooks/dead")

"""The container blueprints on the lab: environment_provisioning and safe_container_upgrade.

Effects are read from the hosts' sandboxes (containers/, snapshots/, reservations/), what ran
where from the events and the hosts' command logs. Each test uses its own container or
environment names and leaves the lab as it found it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from opsgate.lab import LabState
from tests.library.harness import (
    Library,
    commands,
    errors,
    fault,
    lab_snapshot,
    sandbox,
    step,
    tool,
)

pytestmark = pytest.mark.anyio

LAB_HOSTS = ("web-1:web", "web-2:web", "web-3:web", "db-1:db")
WEB = ("web-1", "web-2", "web-3")


def ctr(lab: LabState, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The host's own ctr, as a command over SSH would run it."""
    return tool(lab, host, "ctr", *argv)


def inspect(lab: LabState, host: str, name: str) -> dict[str, str]:
    shown = ctr(lab, host, "inspect", name)
    assert shown.returncode == 0, shown.stderr
    return dict(line.split("=", 1) for line in shown.stdout.splitlines())


def containers(lab: LabState, host: str) -> dict[str, str]:
    """NAME → IMAGE STATE of every container on ``host``."""
    listed = ctr(lab, host, "list").stdout.splitlines()
    return {name: f"{image} {state}" for name, image, state in (x.split("\t") for x in listed)}


# ---------------------------------------------------------------- environment_provisioning

EXAMPLE_ENVIRONMENT = {
    "environment_name": "qa-42",
    "container_count": 5,
    "service_type": "api",
    "hosts": "group:web",
}


async def test_provisioning_spreads_configures_starts_and_backs_up_containers(
    library: Library, lab: LabState
) -> None:
    view = await library.run("environment_provisioning", EXAMPLE_ENVIRONMENT)
    assert view.status == "succeeded", errors(view)
    try:
        expected = {
            "web-1": ["qa-42-api-01", "qa-42-api-04"],
            "web-2": ["qa-42-api-02", "qa-42-api-05"],
            "web-3": ["qa-42-api-03"],
        }
        for host, names in expected.items():
            reservation = sandbox(lab, host) / "reservations" / "qa-42"
            assert reservation.read_text().splitlines() == names
            running = dict.fromkeys(names, "registry.local/api:stable running")
            assert containers(lab, host) == running
            for name in names:
                assert inspect(lab, host, name) == {
                    "name": name,
                    "image": "registry.local/api:stable",
                    "state": "running",
                    "environment": "qa-42",
                    "service": "api",
                    "cpus": "1",
                    "memory_mb": "512",
                    "network": "qa-42-net",
                    "hostname": f"{name}.qa-42.internal",
                    "port": "8080",
                }
                snapshots = ctr(lab, host, "snapshots", name).stdout
                assert snapshots == "initial\tregistry.local/api:stable\trunning\n"
        assert containers(lab, "db-1") == {}
    finally:
        for host in WEB:
            for name in containers(lab, host):
                ctr(lab, host, "stop", name)
                ctr(lab, host, "rm", name)
                ctr(lab, host, "snapshot-rm", name, "initial")
            (sandbox(lab, host) / "reservations" / "qa-42").unlink()


async def test_provisioning_that_fails_to_start_a_container_removes_everything(
    library: Library, lab: LabState
) -> None:
    before = lab_snapshot(lab)
    with fault(lab, "web-2", "ctr.start", "no capacity"):
        view = await library.run(
            "environment_provisioning",
            {**EXAMPLE_ENVIRONMENT, "environment_name": "qa-43"},
        )
    assert view.status == "rolled_back", errors(view)
    assert "no capacity" in str(step(view, "deploy").runs[1].error)
    assert lab_snapshot(lab) == before
    # created, started on two hosts, then removed again by the compensations
    assert any("ctr start" in c for c in commands(lab, "web-1"))
    assert any("ctr rm" in c for c in commands(lab, "web-2"))


async def test_provisioning_with_an_unhealthy_image_removes_everything(
    library: Library, lab: LabState
) -> None:
    before = lab_snapshot(lab)
    view = await library.run(
        "environment_provisioning",
        {**EXAMPLE_ENVIRONMENT, "environment_name": "qa-44", "image": "registry.local/api:broken"},
    )
    assert view.status == "rolled_back", errors(view)
    assert "unhealthy: qa-44-api-01 runs registry.local/api:broken" in errors(view)
    assert lab_snapshot(lab) == before


async def test_provisioning_refused_at_the_allocation_gate_changes_nothing(
    library: Library, lab: LabState
) -> None:
    before = lab_snapshot(lab)
    view = await library.run(
        "environment_provisioning",
        {**EXAMPLE_ENVIRONMENT, "environment_name": "qa-45"},
        reject=frozenset({"allocate"}),
    )
    assert view.status == "rolled_back", errors(view)
    assert library.started_on(view.execution_id, "create") == []
    assert lab_snapshot(lab) == before


# ---------------------------------------------------------------- safe_container_upgrade


@pytest.fixture
def shop(lab: LabState, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running container (its name unique per test) on every web host, removed after."""
    name = "shop-" + request.node.name.split("[")[-1].rstrip("]").replace("_", "-")[:40]
    for host in WEB:
        assert ctr(lab, host, "create", name, "registry.local/shop:1.0").returncode == 0
        ctr(lab, host, "config", name, "port=8080", "replicas=2")
        ctr(lab, host, "start", name)
    yield name
    for host in WEB:
        for leftover in (name, f"{name}.green", f"{name}.blue"):
            ctr(lab, host, "stop", leftover)
            ctr(lab, host, "rm", leftover)
        for line in ctr(lab, host, "snapshots", name).stdout.splitlines():
            ctr(lab, host, "snapshot-rm", name, line.split("\t")[0])


def upgrade(shop: str, strategy: str, image: str = "registry.local/shop:2.0") -> dict[str, object]:
    return {"container": shop, "image": image, "strategy": strategy, "hosts": "group:web"}


@pytest.mark.parametrize("strategy", ["rolling", "canary", "blue_green"])
async def test_each_strategy_upgrades_every_host_and_keeps_the_snapshot(
    library: Library, lab: LabState, shop: str, strategy: str
) -> None:
    params = {**upgrade(shop, strategy), "batch_size": 2}
    view = await library.run("safe_container_upgrade", params)
    assert view.status == "succeeded", errors(view)
    tag = f"pre-upgrade-{view.execution_id}"
    for host in WEB:
        assert containers(lab, host) == {shop: "registry.local/shop:2.0 running"}
        assert inspect(lab, host, shop) == {
            "name": shop,
            "image": "registry.local/shop:2.0",
            "state": "running",
            "port": "8080",
            "replicas": "2",
        }
        assert (
            ctr(lab, host, "snapshots", shop).stdout == f"{tag}\tregistry.local/shop:1.0\trunning\n"
        )
    ran = {s.step_id: s.status for s in view.steps}
    upgraded_by = {
        "rolling": ["rolling_upgrade"],
        "canary": ["canary", "promote"],
        "blue_green": ["green_create", "switch", "retire_blue"],
    }[strategy]
    for step_id in ("rolling_upgrade", "canary", "promote", "green_create", "switch"):
        assert ran[step_id] == ("succeeded" if step_id in upgraded_by else "skipped"), step_id
    if strategy == "canary":
        upgrades = [h for h in WEB if any(f"ctr upgrade {shop} " in c for c in commands(lab, h))]
        assert upgrades == list(WEB)


async def test_rolling_upgrade_with_a_broken_image_stops_after_the_first_batch(
    library: Library, lab: LabState, shop: str
) -> None:
    before = lab_snapshot(lab)
    view = await library.run("safe_container_upgrade", upgrade(shop, "rolling", "shop:broken"))
    assert view.status == "rolled_back", errors(view)
    # batch_size 1: web-1 was upgraded and failed its health check; nothing else started
    assert library.started_on(view.execution_id, "rolling_upgrade") == ["web-1"]
    assert [r.status for r in step(view, "rolling_upgrade").runs] == [
        "failed",
        "cancelled",
        "cancelled",
    ]
    for host in ("web-2", "web-3"):
        assert not any("ctr upgrade" in c for c in commands(lab, host) if shop in c)
    assert lab_snapshot(lab) == before  # web-1 restored, every snapshot dropped
    assert any(f"ctr restore {shop}" in c for c in commands(lab, "web-1"))


async def test_canary_with_a_broken_image_never_reaches_the_other_hosts(
    library: Library, lab: LabState, shop: str
) -> None:
    before = lab_snapshot(lab)
    view = await library.run("safe_container_upgrade", upgrade(shop, "canary", "shop:broken"))
    assert view.status == "rolled_back", errors(view)
    assert library.started_on(view.execution_id, "promote") == []
    pending = [a for a in library.events(view.execution_id) if a.type == "step.waiting_approval"]
    assert pending == []  # the gate before the rest was never even opened
    for host in ("web-2", "web-3"):
        assert not any(f"ctr upgrade {shop}" in c for c in commands(lab, host))
    assert any(f"ctr upgrade {shop}" in c for c in commands(lab, "web-1"))
    assert lab_snapshot(lab) == before


async def test_blue_green_with_a_broken_image_never_switches(
    library: Library, lab: LabState, shop: str
) -> None:
    before = lab_snapshot(lab)
    view = await library.run("safe_container_upgrade", upgrade(shop, "blue_green", "shop:broken"))
    assert view.status == "rolled_back", errors(view)
    assert library.started_on(view.execution_id, "switch") == []
    assert lab_snapshot(lab) == before  # the green containers are gone again


async def test_a_failing_switch_puts_blue_back_everywhere(
    library: Library, lab: LabState, shop: str
) -> None:
    before = lab_snapshot(lab)
    with fault(lab, "web-3", "ctr.rename"):
        view = await library.run("safe_container_upgrade", upgrade(shop, "blue_green"))
    assert view.status == "rolled_back", errors(view)
    assert lab_snapshot(lab) == before
    for host in WEB:
        assert containers(lab, host) == {shop: "registry.local/shop:1.0 running"}


async def test_a_refused_upgrade_fault_restores_the_snapshot(
    library: Library, lab: LabState, shop: str
) -> None:
    before = lab_snapshot(lab)
    with fault(lab, "web-2", "ctr.upgrade", "registry unreachable"):
        view = await library.run(
            "safe_container_upgrade", {**upgrade(shop, "rolling"), "batch_size": 3}
        )
    assert view.status == "rolled_back", errors(view)
    assert "registry unreachable" in errors(view)
    assert lab_snapshot(lab) == before


async def test_outside_the_maintenance_window_nothing_runs(
    library: Library, lab: LabState, shop: str
) -> None:
    # the harness's clock is a Saturday 10:00 in Berlin
    params = {**upgrade(shop, "rolling"), "maintenance_window": "Mon-Fri 22:00-06:00"}
    before = lab_snapshot(lab)
    view = await library.run("safe_container_upgrade", params)
    assert view.status == "rolled_back", errors(view)
    assert "not inside the maintenance window 'Mon-Fri 22:00-06:00'" in errors(view)
    assert library.started_on(view.execution_id, "preflight") == []
    assert lab_snapshot(lab) == before

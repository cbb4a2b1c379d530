"""The harness itself: a bundled blueprint runs to its end on the lab, and the snapshot sees
what changes in a sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.lab import LabState
from tests.library.harness import Library, inject_fault, lab_snapshot

pytestmark = pytest.mark.anyio


async def test_a_bundled_blueprint_succeeds_on_the_lab(library: Library) -> None:
    view = await library.run("disk_usage_report", {"hosts": "*"})
    assert view.status == "succeeded", view
    started = {e.target for e in library.events(view.execution_id) if e.type == "step.started"}
    assert {"web-1", "web-2", "db-1"} <= started


def test_the_snapshot_sees_sandbox_files_but_not_fault_switches(lab: LabState) -> None:
    before = lab_snapshot(lab)
    switch = inject_fault(lab, "web-1", "ctr.start")
    assert lab_snapshot(lab) == before
    made = Path(lab.hosts[0].sandbox) / "made.txt"
    made.write_text("x")
    try:
        assert set(lab_snapshot(lab)) - set(before) == {f"{lab.hosts[0].name}:made.txt"}
    finally:
        made.unlink()
        switch.unlink()

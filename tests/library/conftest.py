"""A lab per test module (its hosts from the module's ``LAB_HOSTS``), a library per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from opsgate.lab import LabState
from opsgate.lab import control as lab_control
from tests.lab.processes import lab_down, lab_up
from tests.library.harness import Library


@pytest.fixture(scope="module")
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabState]:
    hosts = getattr(request.module, "LAB_HOSTS", lab_control.DEFAULT_HOSTS)
    directory = tmp_path_factory.mktemp("lab") / ".lab"
    directory.parent.mkdir(exist_ok=True)
    options = [f"--host={host}" for host in hosts]
    yield lab_up(directory, *options, "--commission-seconds", "0")
    lab_down(directory)


@pytest.fixture
async def library(lab: LabState, tmp_path: Path) -> AsyncIterator[Library]:
    async with Library(lab, tmp_path / "opsgate.db") as running:
        yield running

"""Waiting for another process to do something: it cannot set an ``anyio.Event`` of ours."""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio


async def eventually(holds: Callable[[], bool]) -> None:
    """Return once ``holds()`` is true; fail after ten seconds."""
    with anyio.fail_after(10):
        while not holds():  # noqa: ASYNC110 - the state belongs to another process
            await anyio.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, waiting only to be reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def read_pid(path: str) -> int | None:
    """The pid a command wrote to ``path``, once it is there."""
    try:
        with open(path) as file:
            text = file.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None

"""The ``health_check`` action against a real HTTP server and real TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket

import anyio
import pytest

from opsgate.actions import run_action
from opsgate.actions.health import HealthCheckAction
from tests.actions.contexts import Recorder
from tests.peers.http_server import serve_http

pytestmark = pytest.mark.anyio

HEALTH = HealthCheckAction()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_http_probes_until_the_status_is_expected() -> None:
    recorder = Recorder()
    with serve_http() as peer:
        outputs = await run_action(
            HEALTH, {"url": f"{peer.url}/flaky?times=2", "interval": "2s"}, recorder.context()
        )
    assert outputs == {"healthy": True, "probes": 3, "waited_seconds": 4.0}
    assert recorder.sleeps == [2.0, 2.0]
    assert (
        recorder.sub_tasks[0] == f"not healthy yet (probe 1: {peer.url}/flaky?times=2 answered 429)"
    )


async def test_tcp_probes_until_the_port_accepts() -> None:
    port = _free_port()
    recorder = Recorder()
    listener: anyio.abc.SocketListener | None = None

    async def open_after_two_probes(seconds: float) -> None:
        nonlocal listener
        await recorder.sleep(seconds)
        if len(recorder.sleeps) == 2:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)

    context = recorder.context(sleep=open_after_two_probes)
    try:
        outputs = await run_action(
            HEALTH, {"kind": "tcp", "host": "127.0.0.1", "port": port}, context
        )
    finally:
        if listener is not None:
            await listener.aclose()
    assert outputs["probes"] == 3
    assert recorder.sub_tasks[0] == (
        f"not healthy yet (probe 1: 127.0.0.1:{port}: All connection attempts failed)"
    )


async def test_the_step_timeout_or_a_cancel_ends_an_unhealthy_check() -> None:
    recorder = Recorder()
    with anyio.move_on_after(0.3) as scope:
        await run_action(
            HEALTH, {"kind": "tcp", "host": "127.0.0.1", "port": _free_port()}, recorder.context()
        )
    assert scope.cancelled_caught
    assert len(recorder.sleeps) >= 1

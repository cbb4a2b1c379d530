"""The ``http`` action against a real HTTP(S) server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from opsgate.actions import parse_arguments, run_action
from opsgate.actions.http import HTTPAction
from opsgate.errors import StepError
from opsgate.secrets import secret_token
from tests.actions.contexts import Recorder
from tests.peers.certificates import Certificates, make_certificates
from tests.peers.http_server import PeerHTTPServer, serve_http

pytestmark = pytest.mark.anyio

HTTP = HTTPAction()


@pytest.fixture
def peer() -> Iterator[PeerHTTPServer]:
    with serve_http() as server:
        yield server


async def _run(arguments: dict[str, Any], recorder: Recorder | None = None) -> dict[str, Any]:
    return await run_action(HTTP, arguments, (recorder or Recorder()).context())


async def test_a_post_sends_params_headers_and_json_and_takes_outputs_by_path(
    peer: PeerHTTPServer,
) -> None:
    outputs = await _run(
        {
            "method": "POST",
            "url": f"{peer.url}/echo",
            "params": {"dry_run": "1"},
            "headers": {"X-Request": "abc"},
            "json": {"items": [{"id": 7}]},
            "outputs": {
                "method": "$.method",
                "dry": "$.query.dry_run",
                "h": "$.headers['x-request']",
            },
        }
    )
    assert outputs["status"] == 200
    assert outputs["json"]["body"] == '{"items":[{"id":7}]}'
    assert (outputs["method"], outputs["dry"], outputs["h"]) == ("POST", "1", "abc")


async def test_form_and_raw_bodies_are_sent_as_given(peer: PeerHTTPServer) -> None:
    await _run({"method": "PUT", "url": f"{peer.url}/echo", "form": {"a": "1 2"}})
    await _run({"method": "PUT", "url": f"{peer.url}/echo", "body": "raw text"})
    assert [r["body"] for r in peer.requests] == ["a=1+2", "raw text"]


async def test_a_missing_output_path_says_where_it_stops(peer: PeerHTTPServer) -> None:
    with pytest.raises(StepError) as raised:
        await _run({"url": f"{peer.url}/echo", "outputs": {"x": "$.query.nope"}})
    assert raised.value.error_type == "MissingOutput" and not raised.value.retryable
    assert "the response has no $.query.nope: $.query is a mapping" in str(raised.value)


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (400, False)]
)
async def test_unexpected_statuses_fail_retryable_only_for_5xx_and_429(
    peer: PeerHTTPServer, status: int, retryable: bool
) -> None:
    with pytest.raises(StepError) as raised:
        await _run({"url": f"{peer.url}/status/{status}?retry_after=3600"})
    assert raised.value.error_type == "HTTPStatus"
    assert raised.value.retryable is retryable
    assert f"answered {status}" in str(raised.value)
    assert f"'status {status}'" in str(raised.value)


async def test_expect_status_takes_codes_and_ranges(peer: PeerHTTPServer) -> None:
    outputs = await _run({"url": f"{peer.url}/status/404", "expect_status": [200, "400-404"]})
    assert outputs["status"] == 404


async def test_a_429_with_a_short_retry_after_is_retried_within_the_attempt(
    peer: PeerHTTPServer,
) -> None:
    recorder = Recorder()
    outputs = await _run(
        {"url": f"{peer.url}/flaky?times=2", "outputs": {"n": "$.attempt"}}, recorder
    )
    assert outputs["n"] == 3
    assert recorder.sleeps == [0.0, 0.0]


async def test_redirects_are_not_followed_unless_asked(peer: PeerHTTPServer) -> None:
    with pytest.raises(StepError, match="answered 302"):
        await _run({"url": f"{peer.url}/redirect"})
    followed = await _run({"url": f"{peer.url}/redirect", "follow_redirects": True})
    assert followed["json"]["path"] == "/echo"


async def test_bearer_and_basic_auth_come_from_references_and_are_masked(
    peer: PeerHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_TEST_TOKEN", "tok-123456")
    monkeypatch.setenv("HTTP_TEST_PASSWORD", "pw-654321")
    bearer = await _run(
        {"url": f"{peer.url}/echo", "auth": {"type": "bearer", "token": "env:HTTP_TEST_TOKEN"}}
    )
    basic = await _run(
        {
            "url": f"{peer.url}/echo",
            "auth": {"type": "basic", "username": "u", "password": "env:HTTP_TEST_PASSWORD"},
        }
    )
    assert peer.requests[0]["headers"]["authorization"] == "Bearer tok-123456"
    assert peer.requests[1]["headers"]["authorization"].startswith("Basic ")
    assert bearer["json"]["headers"]["authorization"] == "Bearer ***"
    assert "tok-123456" not in str(bearer) and "pw-654321" not in str(basic)


async def test_a_secret_parameter_in_a_header_is_revealed_to_the_server_only(
    peer: PeerHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_TEST_TOKEN", "tok-abcdef")
    header = f"Bearer {secret_token('env:HTTP_TEST_TOKEN')}"
    outputs = await _run({"url": f"{peer.url}/echo", "headers": {"Authorization": header}})
    assert peer.requests[0]["headers"]["authorization"] == "Bearer tok-abcdef"
    assert "tok-abcdef" not in outputs["body"] and "Bearer ***" in outputs["body"]


async def test_the_body_is_capped_with_its_size(peer: PeerHTTPServer) -> None:
    recorder = Recorder()
    outputs = await run_action(
        HTTP, {"url": f"{peer.url}/big?bytes=5000"}, recorder.context(output_limit=100)
    )
    assert outputs["body_bytes"] == 5000 and outputs["truncated"] is True
    assert len(outputs["body"]) < 200


async def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StepError) as raised:
        await _run({"url": f"http://127.0.0.1:{port}/"})
    assert raised.value.error_type == "ConnectionError" and raised.value.retryable


async def test_the_request_timeout_is_retryable(peer: PeerHTTPServer) -> None:
    with pytest.raises(StepError) as raised:
        await _run({"url": f"{peer.url}/slow?seconds=2", "timeout": "200ms"})
    assert raised.value.error_type == "Timeout" and raised.value.retryable


async def test_cancellation_abandons_the_request(peer: PeerHTTPServer) -> None:
    with anyio.move_on_after(0.3) as scope:
        await _run({"url": f"{peer.url}/slow?seconds=2"})
    assert scope.cancelled_caught


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


async def test_tls_is_verified_by_default_and_a_custom_ca_is_trusted(
    certificates: Certificates,
) -> None:
    with serve_http(certificates.server) as peer:
        with pytest.raises(StepError) as raised:
            await _run({"url": f"{peer.url}/echo"})
        assert raised.value.error_type == "TLSError" and not raised.value.retryable
        assert "give the CA that signed it as with.ca" in str(raised.value)
        outputs = await _run({"url": f"{peer.url}/echo", "ca": f"file:{certificates.ca_file}"})
        assert outputs["status"] == 200


def test_output_names_the_action_sets_are_refused() -> None:
    with pytest.raises(StepError, match="uses names the action sets itself: status"):
        parse_arguments(HTTP, {"url": "http://127.0.0.1/", "outputs": {"status": "$.s"}})

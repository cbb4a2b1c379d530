"""Streamable HTTP in a real ``opsgate serve`` process: tokens, identities, transport guards."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest

from tests.server.calls import bearer_client, data
from tests.server.processes import Home, http_server, make_home

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, str]]:
    home = make_home(tmp_path_factory.mktemp("http"))
    with http_server(home) as base:
        yield home, base


def test_a_request_without_a_token_gets_401_with_the_resource_metadata(
    served: tuple[Home, str],
) -> None:
    _, base = served
    response = httpx.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    header = response.headers["www-authenticate"]
    metadata_url = header.split('resource_metadata="')[1].split('"')[0]
    assert metadata_url == f"{base}/.well-known/oauth-protected-resource/mcp"
    metadata = httpx.get(metadata_url).json()
    assert metadata["resource"] == f"{base}/mcp"
    bad = httpx.post(
        f"{base}/mcp", json={}, headers={"Authorization": "Bearer ogt_00000000_forgedforgedforged"}
    )
    assert bad.status_code == 401


def test_a_foreign_host_header_gets_421_and_healthz_needs_no_token(
    served: tuple[Home, str],
) -> None:
    home, base = served
    token = home.token("probe", "viewer")
    response = httpx.post(
        f"{base}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Host": "evil.example.com", "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 421
    health = httpx.get(f"{base}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_two_tokens_act_as_two_principals_named_in_the_events(
    served: tuple[Home, str], mode: str
) -> None:
    home, base = served
    alice, bob = home.token("alice", "operator"), home.token("bob", "operator,ops-manager")
    async with bearer_client(base, alice) as requester:
        names = [t.name for t in (await requester.list_tools()).tools]
        assert "execute_workflow" in names
        started = data(
            await requester.call_tool(
                "execute_workflow", {"workflow_name": "slow", "wait_seconds": 1}
            )
        )
        assert started["status"] == "running"
    async with bearer_client(base, bob) as operator:
        execution_id = started["execution_id"]
        cancelled = data(
            await operator.call_tool(
                "cancel_execution", {"execution_id": execution_id, "reason": "not today"}
            )
        )
        assert cancelled["status"] in ("cancelled", "rolling_back", "rolled_back")
        events = data(
            await operator.call_tool("get_execution_events", {"execution_id": execution_id})
        )
    actors = {e["type"]: e["actor"] for e in events["events"]}
    assert actors["execution.created"] == "alice"
    assert actors["execution.cancelled"] == "bob"


async def test_a_revoked_token_is_refused_from_its_next_request(served: tuple[Home, str]) -> None:
    home, base = served
    token = home.token("carol", "viewer")
    async with bearer_client(base, token) as client:
        await client.list_tools()
    home.opsgate("token", "revoke", "carol")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 401
    listed = home.opsgate("token", "list").stdout
    assert "carol" not in listed and "alice" in listed
    stored = await anyio.Path(home.root / "tokens.json").read_text()
    assert token.split("_", 2)[2] not in stored  # the secret (it may hold "_") is never stored

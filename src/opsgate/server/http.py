"""The two transports: stdio for a client that spawns opsgate, Streamable HTTP for a shared
server (bearer tokens, DNS-rebinding protection, ``/healthz``)."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from opsgate import __version__
from opsgate.config import Settings
from opsgate.server.app import create_server
from opsgate.server.auth import TokenBookVerifier, auth_settings
from opsgate.server.state import AppState
from opsgate.tokens import TokenBook

#: Host headers and origins accepted on a loopback bind, whatever the port.
LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")


async def serve_stdio(settings: Settings) -> None:
    """Serve one client on stdin/stdout as the local principal until it closes the pipe."""
    await create_server(settings).run_stdio_async()


async def healthz(_: Request) -> Response:
    """Liveness for load balancers and scripts; needs no token."""
    return JSONResponse({"status": "ok", "version": __version__})


def http_app(
    settings: Settings,
    *,
    host: str,
    port: int,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> Starlette:
    """The ASGI app: ``/mcp`` behind bearer tokens, protected-resource metadata, ``/healthz``."""
    base_url = f"http://{host}:{port}"
    server: MCPServer[AppState] = create_server(
        settings,
        token_verifier=TokenBookVerifier(TokenBook(settings.tokens_file)),
        auth=auth_settings(base_url),
    )

    server.custom_route("/healthz", methods=["GET"])(healthz)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*LOOPBACK_HOSTS, f"{host}:*", *allowed_hosts],
        allowed_origins=[*LOOPBACK_ORIGINS, f"http://{host}:*", *allowed_origins],
    )
    return server.streamable_http_app(transport_security=security, host=host)


async def serve_http(
    settings: Settings,
    *,
    host: str,
    port: int,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> None:
    """Serve Streamable HTTP until SIGINT/SIGTERM; the worker stops with it (see app.py)."""
    app = http_app(
        settings,
        host=host,
        port=port,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
    )
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    await uvicorn.Server(config).serve()

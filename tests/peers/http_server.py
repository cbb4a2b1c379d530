"""A real HTTP(S) server on 127.0.0.1 for the ``http`` and ``health_check`` tests.

Routes (query ``?status=`` etc. where noted):
``/echo``            the request as JSON: method, path, query, headers, body
``/status/<code>``   that status, a short text body (``?retry_after=`` adds the header)
``/flaky``           429 with ``Retry-After: 0`` the first ``?times=`` requests, then 200
``/slow``            answers after ``?seconds=``
``/redirect``        302 to ``/echo``
``/big``             ``?bytes=`` of text
Every request is recorded in :attr:`PeerHTTPServer.requests`.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class PeerHTTPServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


def _handler(peer: PeerHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read :attr:`PeerHTTPServer.requests` instead."""

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            request = {
                "method": self.command,
                "path": parts.path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            peer.requests.append(request)
            route = parts.path.strip("/").split("/")
            as_json = {"Content-Type": "application/json"}
            if route[0] == "echo":
                self._answer(200, json.dumps(request).encode(), as_json)
            elif route[0] == "status":
                extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                self._answer(int(route[1]), f"status {route[1]}".encode(), extra)
            elif route[0] == "flaky":
                count = peer.counters.get("flaky", 0) + 1
                peer.counters["flaky"] = count
                if count <= int(query.get("times", "1")):
                    self._answer(429, b"slow down", {"Retry-After": "0"})
                else:
                    self._answer(200, json.dumps({"attempt": count}).encode(), as_json)
            elif route[0] == "slow":
                time.sleep(float(query.get("seconds", "5")))
                self._answer(200, b"late")
            elif route[0] == "redirect":
                self._answer(302, b"", {"Location": "/echo"})
            elif route[0] == "big":
                self._answer(200, b"x" * int(query["bytes"]))
            else:
                self._answer(404, b"no such route")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a test that cancelled its request) is expected here."""


@contextmanager
def serve_http(tls: ssl.SSLContext | None = None) -> Iterator[PeerHTTPServer]:
    """Serve on a free port of 127.0.0.1 in a thread until the block ends."""
    peer = PeerHTTPServer(url="")
    server = _QuietServer(("127.0.0.1", 0), _handler(peer))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    peer.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="peer-http", daemon=True
    )
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""A real HTTP(S) server on 127.0.0.1 for the ``http`` and ``health_check`` tests.

Routes (query ``?status=`` etc. where noted):
``/echo``            the request as JSON: method, path, query, headers, body
``/status/<code>``   that status, a short text body (``?retry_after=`` adds the header)
``/flaky``           429 with ``Retry-After: 0`` the first ``?times=`` requests, then 200
``/slow``            answers after ``?seconds=``
``/redirect``        302 to ``/echo``
``/big``             ``?bytes=`` of text
Every request is recorded in :attr:`PeerHTTPServer.requests`. The threaded server itself is
the lab's (:mod:`opsgate.lab.httpd`).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opsgate.lab.httpd import QuietHandler, serve_in_thread


@dataclass
class PeerHTTPServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


def _handler(peer: PeerHTTPServer) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            request = {
                "method": self.command,
                "path": parts.path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": self.read_body(),
            }
            peer.requests.append(request)
            route = parts.path.strip("/").split("/")
            as_json = {"Content-Type": "application/json"}
            if route[0] == "echo":
                self.answer(200, json.dumps(request).encode(), as_json)
            elif route[0] == "status":
                extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                self.answer(int(route[1]), f"status {route[1]}".encode(), extra)
            elif route[0] == "flaky":
                count = peer.counters.get("flaky", 0) + 1
                peer.counters["flaky"] = count
                if count <= int(query.get("times", "1")):
                    self.answer(429, b"slow down", {"Retry-After": "0"})
                else:
                    self.answer(200, json.dumps({"attempt": count}).encode(), as_json)
            elif route[0] == "slow":
                time.sleep(float(query.get("seconds", "5")))
                self.answer(200, b"late")
            elif route[0] == "redirect":
                self.answer(302, b"", {"Location": "/echo"})
            elif route[0] == "big":
                self.answer(200, b"x" * int(query["bytes"]))
            else:
                self.answer(404, b"no such route")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    return Handler


@contextmanager
def serve_http(tls: ssl.SSLContext | None = None) -> Iterator[PeerHTTPServer]:
    """Serve on a free port of 127.0.0.1 in a thread until the block ends."""
    peer = PeerHTTPServer(url="")
    with serve_in_thread(_handler(peer), tls) as url:
        peer.url = url
        yield peer

"""Real ``opsgate`` processes for the transport tests: documents, settings, a served port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent

BLUEPRINTS = {
    "hello.yaml": """
name: hello
version: "1"
description: Log twice.
category: demo
risk: low
steps:
  - {id: first, action: log, with: {message: hello}}
  - {id: second, action: log, depends_on: [first], with: {message: again}}
""",
    "slow.yaml": """
name: slow
version: "1"
description: Wait a minute, then log.
risk: medium
steps:
  - {id: pause, action: wait, with: {duration: 60s}}
  - {id: done, action: log, depends_on: [pause], with: {message: done}}
""",
    "gated.yaml": """
name: gated
version: "1"
description: Prepare, wait for an operator's approval, apply.
risk: high
steps:
  - {id: prepare, action: log, with: {message: prepared}}
  - id: apply
    action: log
    depends_on: [prepare]
    approval: {approvers: {roles: [operator]}, quorum: 1, timeout: 1h}
    with: {message: applied}
""",
}
ROLES = """
principals:
  alice: {roles: [operator]}
  bob: {roles: [operator, ops-manager]}
default_roles: [viewer]
"""


@dataclass
class Home:
    """A working directory with blueprints, policies, a database and a tokens file."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "OPSGATE_DATABASE_URL": f"sqlite:///{self.root / 'opsgate.db'}",
            "OPSGATE_BLUEPRINTS": str(self.root / "blueprints"),
            "OPSGATE_POLICIES": str(self.root / "policies"),
            "OPSGATE_TOKENS": str(self.root / "tokens.json"),
            "OPSGATE_PRINCIPAL": "alice",
        }

    def opsgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "opsgate"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

    def token(self, name: str, roles: str) -> str:
        return self.opsgate("token", "create", name, "--roles", roles).stdout.strip()


def make_home(root: Path) -> Home:
    (root / "blueprints").mkdir()
    (root / "policies").mkdir()
    for name, text in BLUEPRINTS.items():
        (root / "blueprints" / name).write_text(text)
    (root / "policies" / "roles.yaml").write_text(ROLES)
    return Home(root)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def http_server(home: Home) -> Iterator[str]:
    """``opsgate serve --transport http`` on a free loopback port; yields its base URL."""
    port = free_port()
    log = (home.root / "server.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "opsgate"), "serve", "--transport", "http", "--port", str(port)],
        env=home.env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError((home.root / "server.log").read_text())
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            try:
                process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        else:
            raise AssertionError("the server did not become healthy in 15 s")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()

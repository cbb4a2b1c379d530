"""An in-process opsgate server on a real store and worker, with test blueprints.

The blueprints use the ``scripted`` action (a ``block_file`` holds a step until the test
creates it) and the control actions; ``Client(server)`` speaks the real protocol to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp.server import MCPServer
from ruamel.yaml import YAML

from opsgate.catalog import Catalog
from opsgate.config import Settings
from opsgate.runtime import Runtime
from opsgate.scheduler import Scheduler
from opsgate.server import create_server
from opsgate.server.state import AppState
from opsgate.service import Service
from opsgate.spec.policies import PolicySet
from opsgate.stores import SQLStore
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY, load_spec
from tests.server.npm_tools import NpmTools, ensure_npm_tools

BLUEPRINTS = """
- name: deploy
  version: "1.0.0"
  description: Ship a release, held at the ship step until the test releases it.
  category: delivery
  risk: high
  parameters:
    host: {type: string, required: true, pattern: "^[a-z0-9-]+$", description: the host}
    replicas: {type: integer, default: 2, min: 1, max: 5}
    token: {type: string, secret: true, default: "env:DEPLOY_TOKEN"}
  concurrency: {locks: ["host:{{ params.host }}"], on_conflict: queue}
  steps:
    - {id: announce, action: log, with: {message: "deploying to {{ params.host }}"}}
    - id: ship
      action: scripted
      depends_on: [announce]
      with: {block_file: "BLOCK"}
      rollback: {action: log, with: {message: "unship"}}
    - {id: verify, action: log, depends_on: [ship], with: {message: "verified"}}
- name: hello
  version: "1"
  description: Say hello, at once.
  category: demo
  risk: low
  steps:
    - {id: first, action: log, with: {message: "hello"}}
    - {id: second, action: log, depends_on: [first], with: {message: "again"}}
- name: gated
  version: "1"
  description: Log, wait for bob's approval, log.
  risk: high
  steps:
    - {id: prepare, action: log, with: {message: "prepared"}}
    - id: apply
      action: log
      depends_on: [prepare]
      approval: {approvers: {principals: [bob]}, quorum: 1, timeout: 1h}
      with: {message: "applied"}
- name: confirmed
  version: "1"
  description: Log, then a step its requester confirms in the client (or bob approves).
  risk: medium
  steps:
    - {id: prepare, action: log, with: {message: "prepared"}}
    - id: apply
      action: log
      depends_on: [prepare]
      approval: {approvers: {principals: [bob]}, confirm: true, timeout: 1h}
      with: {message: "applied"}
      rollback: {action: log, with: {message: "unapplied"}}
- name: broken
  version: "1"
  description: Fails at its only step.
  category: demo
  risk: low
  steps:
    - id: boom
      action: scripted
      with: {outcomes: [{fail: "disk full", retryable: false}], default: {succeed: {}}}
"""


@pytest.fixture
def release(tmp_path: Path) -> anyio.Path:
    """Create this file to let the ``ship`` step of ``deploy`` finish."""
    return anyio.Path(tmp_path / "release")


def open_test_runtime(release: anyio.Path) -> Callable[[Settings], Runtime]:
    documents = YAML(typ="safe").load(BLUEPRINTS.replace("BLOCK", str(release)))
    specs = [load_spec(document) for document in documents]
    catalog = Catalog(blueprints={spec.name: spec for spec in specs}, policies=PolicySet())

    def open_runtime(settings: Settings) -> Runtime:
        store = SQLStore.open(settings.database_url)
        store.migrate()
        worker = Worker(store, REGISTRY, lease_seconds=5)
        service = Service(store, catalog, wake=worker.wake)
        scheduler = Scheduler(store, service)
        return Runtime(settings, store, catalog, REGISTRY, worker, service, scheduler)

    return open_runtime


@pytest.fixture
def make_server(tmp_path: Path, release: anyio.Path) -> Callable[..., MCPServer[AppState]]:
    """A server on a SQLite file acting as ``principal`` (the stdio-style local caller); pass
    ``database_url`` to run on another database (the bus tests run on both)."""

    def make(principal: str = "alice", database_url: str | None = None) -> MCPServer[AppState]:
        url = database_url or f"sqlite:///{tmp_path / 'opsgate.db'}"
        settings = Settings(database_url=url, principal=principal)
        return create_server(settings, open_runtime=open_test_runtime(release))

    return make


@pytest.fixture
def server(make_server: Callable[..., MCPServer[AppState]]) -> MCPServer[AppState]:
    return make_server()


@pytest.fixture(scope="session")
def npm_tools() -> NpmTools:
    """The Inspector CLI and the conformance suite, installed from npm on first use."""
    return ensure_npm_tools()

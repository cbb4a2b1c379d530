"""One blueprint using the real actions (shell, health_check, http, ssh, ssh.upload,
ssh.download, ipmi) runs end to end against the test peers, through the
service, the worker and the store, on SQLite and on PostgreSQL; afterwards no secret it used
is found in the database, the events, the outputs, the tool-facing results or the logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from opsgate.actions import ActionRegistry
from opsgate.catalog import Catalog
from opsgate.children import ServiceChildren
from opsgate.inventory import load_inventory
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.worker import Worker
from tests.engine.rehearsal import load_spec
from tests.peers.http_server import serve_http
from tests.peers.ipmi_sim import SimulatedBMC, simulated_bmc
from tests.peers.ssh_server import serve_ssh

pytestmark = pytest.mark.anyio

SSH_PASSWORD = "ssh-pw-Zq81xK"
HTTP_TOKEN = "http-token-Wm27Lp"
PARAMETER_SECRET = "param-secret-Rt55Jd"

BLUEPRINT = """
name: everything
version: "1"
parameters:
  api_token: {type: string, secret: true, required: true}
  note: {type: string, default: "hello; $(id)"}
targets: "group:web"
steps:
  - id: local
    action: shell
    with: {command: "echo {{ params.note }}"}
  - id: healthy
    action: health_check
    with: {url: "PEER_URL/status/200", interval: 1s}
  - id: call
    action: http
    depends_on: [healthy]
    with:
      method: POST
      url: "PEER_URL/echo"
      headers: {X-Api-Key: "{{ params.api_token }}"}
      auth: {type: bearer, token: env:E2E_HTTP_TOKEN}
      json: {note: "{{ params.note }}"}
      outputs: {key: "$.headers['x-api-key']"}
  - id: upload
    action: ssh.upload
    for_each: targets
    with: {local_path: "LOCAL", remote_path: /payload.txt, mode: "0600"}
  - id: remote
    action: ssh
    for_each: targets
    depends_on: [upload]
    with:
      command: "cat payload.txt; echo {{ params.note }}; echo $TOKEN"
      env: {TOKEN: "{{ params.api_token }}"}
  - id: power
    action: ipmi
    for_each: targets
    with: {operation: power_on}
  - id: provision
    action: ipmi
    for_each: targets
    depends_on: [power]
    with: {operation: set_lan_config, ip_address: 10.0.0.5, netmask: 255.255.255.0}
  - id: nested
    action: workflow
    depends_on: [local]
    with: {workflow_name: child_note, parameters: {note: "{{ params.note }}"}}
  - id: fetch
    action: ssh.download
    for_each: targets
    depends_on: [remote]
    with: {remote_path: /payload.txt, local_path: "BACK"}
"""

CHILD = """
name: child_note
version: "1"
parameters:
  note: {type: string, required: true}
steps:
  - {id: say, action: log, with: {message: "child got {{ params.note }}"}}
"""


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[SimulatedBMC]:
    (tmp_path / "bmc").mkdir()
    with simulated_bmc(tmp_path / "bmc") as simulator:
        yield simulator


async def test_a_blueprint_of_every_action_runs_against_the_peers_and_leaks_no_secret(
    database_url: str,
    tmp_path: Path,
    bmc: SimulatedBMC,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("E2E_SSH_PASSWORD", SSH_PASSWORD)
    monkeypatch.setenv("E2E_HTTP_TOKEN", HTTP_TOKEN)
    monkeypatch.setenv("E2E_PARAMETER", PARAMETER_SECRET)
    monkeypatch.setenv("E2E_BMC_PASSWORD", bmc.password)
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "remote"
    root.mkdir()
    local, back = tmp_path / "payload.txt", tmp_path / "back.txt"
    local.write_text("payload\n")
    async with serve_ssh(root, {"deploy": SSH_PASSWORD}) as ssh:
        (tmp_path / "known_hosts").write_text(ssh.known_hosts_line())
        (tmp_path / "inventory.yaml").write_text(
            "targets:\n"
            "  web-1:\n"
            "    address: 127.0.0.1\n"
            "    groups: [web]\n"
            f"    ssh: {{port: {ssh.port}, user: deploy, password: env:E2E_SSH_PASSWORD,"
            " known_hosts: known_hosts}\n"
            f"    bmc: {{port: {bmc.port}, user: {bmc.user}, password: env:E2E_BMC_PASSWORD}}\n"
        )
        inventory = load_inventory(tmp_path / "inventory.yaml")
        with serve_http() as http:
            text = BLUEPRINT.replace("PEER_URL", http.url).replace("LOCAL", str(local))
            registry = ActionRegistry.builtin()
            spec = load_spec(YAML(typ="safe").load(text.replace("BACK", str(back))), registry)
            store = SQLStore.open(database_url)
            store.migrate()
            try:
                worker = Worker(store, registry, targets=inventory.for_workflow)
                child = load_spec(YAML(typ="safe").load(CHILD), registry)
                catalog = Catalog(blueprints={spec.name: spec, child.name: child})
                service = Service(store, catalog, wake=worker.wake, inventory=inventory)
                worker.children = partial(ServiceChildren, service)
                started = await service.execute_workflow(
                    Principal("alice"), "everything", {"api_token": "env:E2E_PARAMETER"}
                )
                await worker.run(until_idle=True)
                status = await service.get_workflow_status(started.execution_id)
                events = await service.get_execution_events(started.execution_id, limit=400)
                runs = store.list_step_runs(started.execution_id)
            finally:
                store.close()

    assert status.status == "succeeded", status.model_dump_json(indent=2)
    outputs = {run.step_id: run.outputs for run in runs}
    assert outputs["local"]["stdout"] == "hello; $(id)\n"
    assert outputs["call"]["key"] == "***"
    assert outputs["remote"]["stdout"] == "payload\nhello; $(id)\n***\n"
    assert back.read_text() == "payload\n"
    # The peers did receive the secrets: they were used, not lost.
    assert http.requests[-1]["headers"]["authorization"] == f"Bearer {HTTP_TOKEN}"
    assert http.requests[-1]["headers"]["x-api-key"] == PARAMETER_SECRET
    assert ssh.connections == 1

    assert outputs["nested"]["status"] == "succeeded"
    assert outputs["nested"]["outputs"]["say"]["message"] == "child got hello; $(id)"
    assert outputs["power"] == {"operation": "power_on", "power": "on"}
    assert outputs["provision"]["lan"]["ipv4_address"] == "10.0.0.5/24"
    secrets = (SSH_PASSWORD, HTTP_TOKEN, PARAMETER_SECRET, bmc.password)
    shown = [status.model_dump_json(), events.model_dump_json(), repr(runs)]
    shown += [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    for secret in secrets:
        assert [text for text in shown if secret in text] == [], secret
    if database_url.startswith("sqlite"):
        files = sorted(tmp_path.glob("opsgate.db*"))  # noqa: ASYNC240 - the run is over
        assert files
        for file in files:
            raw = file.read_bytes()
            assert not any(secret.encode() in raw for secret in secrets), file
        assert b"env:E2E_PARAMETER" in b"".join(f.read_bytes() for f in files)

"""Runs the bundled blueprints, under the bundled policies, against a running lab.

A :class:`Library` is what ``opsgate serve`` would be on that lab: the runtime built from
``blueprints/``, ``policies/`` and the lab's inventory, on its own SQLite file, with its worker
running. Its clock is real time moved into the bundled maintenance window (a Saturday, Berlin
time), so critical blueprints are allowed; everything else about time is real.

Requests come from ``alice`` (operator); approval gates are decided by an eligible
principal of ``policies/roles.yaml`` who is not the requester, as a person would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx

from opsgate.config import Settings
from opsgate.engine.statuses import EXECUTION_TERMINAL
from opsgate.lab.state import LabHost, LabState
from opsgate.models import Event, StepRun
from opsgate.runtime import Runtime
from opsgate.service import Principal
from opsgate.views import ExecutionStatusView, StepView

ROOT = Path(__file__).resolve().parents[2]
REQUESTER = "alice"
#: Who decides gates, in this order of preference (never the requester).
APPROVERS = ("bob", "carol")
#: Saturday 2026-03-28 10:00 in Berlin: inside the bundled maintenance window.
IN_WINDOW = datetime(2026, 3, 28, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))
#: What :func:`lab_snapshot` leaves out of a sandbox: tools copied in at each start, and the
#: fault switches of :func:`inject_fault`.
NOT_STATE = ("bin", "faults")
DAY = 24 * 3600


def window_clock() -> Any:
    """Real time, moved so that now is :data:`IN_WINDOW`."""
    offset = IN_WINDOW.astimezone(UTC) - datetime.now(UTC)
    return lambda: datetime.now(UTC) + offset


class Library:
    """The bundled blueprints and policies on one lab, one database and one running worker."""

    def __init__(self, lab: LabState, database: Path) -> None:
        settings = Settings(
            database_url=f"sqlite:///{database}",
            blueprints=ROOT / "blueprints",
            policies=ROOT / "policies",
            inventory=Path(lab.inventory),
            principal=REQUESTER,
        )
        self.lab = lab
        self.runtime = Runtime.open(settings, clock=window_clock())
        self.service = self.runtime.service
        self.requester = self.principal(REQUESTER)
        self._stack = AsyncExitStack()

    def principal(self, name: str) -> Principal:
        return Principal(name, self.runtime.catalog.roles.roles_of(name))

    async def __aenter__(self) -> Library:
        group = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(group.cancel_scope.cancel)
        group.start_soon(self.runtime.worker.run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self.runtime.close()

    async def run(
        self,
        name: str,
        params: Mapping[str, Any],
        *,
        responses: Mapping[str, Mapping[str, Any]] | None = None,
        reject: frozenset[str] = frozenset(),
        within: float = 300,
    ) -> ExecutionStatusView:
        """Execute ``name`` as the requester and drive it to its end (rollback included):
        every pending approval is granted (with ``responses[step_id]`` as its response), or
        rejected for the steps in ``reject``. Returns the final status view."""
        started = await self.service.execute_workflow(self.requester, name, dict(params))
        return await self.finish(started.execution_id, responses or {}, reject, within)

    async def finish(
        self,
        execution_id: str,
        responses: Mapping[str, Mapping[str, Any]],
        reject: frozenset[str],
        within: float,
    ) -> ExecutionStatusView:
        try:
            with anyio.fail_after(within):
                while True:
                    # A failed execution is terminal before its rollback runs: the end is a
                    # terminal status that no worker holds any more.
                    execution = self.runtime.store.get_execution(execution_id)
                    if execution.status in EXECUTION_TERMINAL and execution.lease_owner is None:
                        return await self.service.get_workflow_status(execution_id)
                    await self.decide(responses, reject)
                    await anyio.sleep(0.05)
        except TimeoutError:
            shown = "\n".join(
                f"{e.type} {e.step_id} {e.target} {str(e.data)[:200]}"
                for e in self.events(execution_id)[-15:]
            )
            message = f"{execution_id} did not end within {within} s; its last events:\n{shown}"
            raise TimeoutError(message) from None

    async def decide(
        self, responses: Mapping[str, Mapping[str, Any]], reject: frozenset[str]
    ) -> None:
        """Decide every pending approval: the execution's and its child executions' (the
        library's database holds only the test's own executions)."""
        for name in APPROVERS:
            approver = self.principal(name)
            pending = await self.service.list_pending_approvals(approver)
            for approval in pending.approvals:
                if approval.step_id in reject:
                    await self.service.reject_step(approver, approval.approval_id, comment="no")
                else:
                    await self.service.approve_step(
                        approver,
                        approval.approval_id,
                        response=dict(responses.get(approval.step_id, {})) or None,
                    )

    def events(self, execution_id: str) -> list[Event]:
        return self.runtime.store.list_events(execution_id)

    def started_on(self, execution_id: str, step_id: str) -> list[str]:
        """The targets ``step_id``'s runs started on, in the order they started."""
        return [
            str(e.target)
            for e in self.events(execution_id)
            if e.type == "step.started" and e.step_id == step_id
        ]

    def outputs(self, execution_id: str, step_id: str) -> list[dict[str, Any]]:
        """The published outputs of every run of ``step_id``, in item order (the status view
        does not carry outputs)."""
        return [dict(run.outputs or {}) for run in self._runs(execution_id, step_id)]

    def outputs_by_target(self, execution_id: str, step_id: str) -> dict[str, dict[str, Any]]:
        """The published outputs of every run of ``step_id``, by the run's target."""
        runs = self._runs(execution_id, step_id)
        return {str(run.target): dict(run.outputs or {}) for run in runs}

    def _runs(self, execution_id: str, step_id: str) -> list[StepRun]:
        runs = [r for r in self.runtime.store.list_step_runs(execution_id) if r.step_id == step_id]
        runs.sort(key=lambda run: -1 if run.item_index is None else run.item_index)
        return runs


def step(view: ExecutionStatusView, step_id: str) -> StepView:
    """The step ``step_id`` of ``view``."""
    return next(s for s in view.steps if s.step_id == step_id)


def errors(view: ExecutionStatusView) -> str:
    """Every error of ``view`` (the execution's, then each run's), one a line, for assertions."""
    found = [f"execution: {view.error['message']}"] if view.error else []
    for s in view.steps:
        found += [f"{s.step_id} {r.target}: {r.error['message']}" for r in s.runs if r.error]
    return "\n".join(found)


def lab_host(lab: LabState, host: str) -> LabHost:
    """The lab's SSH host named ``host``."""
    return next(h for h in lab.hosts if h.name == host)


def sandbox(lab: LabState, host: str) -> Path:
    """The sandbox (the SSH login directory) of ``host``."""
    return Path(lab_host(lab, host).sandbox)


def commands(lab: LabState, host: str) -> list[str]:
    """Every command line ``host`` has run so far, from its command log."""
    log = Path(lab_host(lab, host).command_log)
    return log.read_text().splitlines() if log.exists() else []


def tool(lab: LabState, host: str, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``host``'s own stand-in tool ``name`` in its sandbox, as a command over SSH would."""
    root = sandbox(lab, host)
    return subprocess.run(
        [str(root / "bin" / name), *argv],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def hook_url(lab: LabState, name: str) -> str:
    """The URL of the lab's webhook sink ``name`` (read back at ``/hooks/{name}``)."""
    return f"{lab.health_url}/hooks/{name}"


def age(path: Path, days: float) -> None:
    """Set ``path``'s modification time ``days`` days into the past."""
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


def inject_fault(lab: LabState, host: str, operation: str, message: str = "injected") -> Path:
    """Make a stand-in tool refuse ``operation`` (``"ctr.start"``) on ``host`` until the file
    this returns is removed."""
    return _switch_on(sandbox(lab, host) / "faults" / operation, message)


@contextmanager
def fault(lab: LabState, host: str, operation: str, message: str = "injected") -> Iterator[Path]:
    """:func:`inject_fault` for the length of a ``with`` block."""
    with _switched(inject_fault(lab, host, operation, message)) as switch:
        yield switch


@contextmanager
def service_fault(lab: LabState, switch: str, message: str = "injected") -> Iterator[Path]:
    """Make one of the lab's services refuse an operation (``"maas.tag"``, ``"http.put_data"``,
    ``"bmc-srv-03.lan"``) for the length of a ``with`` block."""
    with _switched(_switch_on(Path(lab.directory) / "faults" / switch, message)) as path:
        yield path


def _switch_on(path: Path, message: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(message + "\n")
    return path


@contextmanager
def _switched(path: Path) -> Iterator[Path]:
    try:
        yield path
    finally:
        path.unlink()


def lab_snapshot(lab: LabState) -> dict[str, str]:
    """What the lab holds, to compare before and after an execution: every file of every
    sandbox and BMC (path → sha256; tools and fault switches left out) and every MaaS
    machine's status and tags."""
    state: dict[str, str] = {}
    for host in lab.hosts:
        sandbox = Path(host.sandbox)
        for path in sorted(sandbox.rglob("*")):
            relative = path.relative_to(sandbox)
            if relative.parts[0] in NOT_STATE or not path.is_file():
                continue
            state[f"{host.name}:{relative}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    bmc = Path(lab.directory) / "bmc"
    for path in sorted(bmc.rglob("*")) if bmc.exists() else []:
        if path.is_file():
            state[f"bmc:{path.relative_to(bmc)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    key = Path(lab.maas_api_key_file).read_text().strip()
    machines = httpx.get(
        f"{lab.maas_url}machines/", headers={"Authorization": f"Bearer {key}"}, timeout=5
    ).json()
    for machine in machines:
        tags = ",".join(sorted(machine["tag_names"]))
        state[f"maas:{machine['system_id']}"] = f"{machine['status_name']} [{tags}]"
    return state

"""Approval gates: where each gate of a step stands, and what to do about it. Pure.

A step may be held by several gates (its blueprint's ``approval:``, policy gates on the step,
policy gates on the whole execution); each gate has a chain of approval rows: the first request,
then any replacement (escalated, superseded, or re-opened because the plan changed after a
grant). Only the newest row of a chain counts.

Every approval is bound to a digest of what its step will do: the blueprint step, the
parameters, the targets and the outputs of the steps it reads from (for the execution's gates:
the parameters and the targets). A grant for another digest does not clear the step: the plan
changed, so a new request is opened and the old pending one is superseded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsgate.engine.statuses import ApprovalStatus
from opsgate.models import Approval, ApprovalDecisionKind, Approvers, OnTimeout, StepRun
from opsgate.policy import EXECUTION_GATE_STEP, Gate
from opsgate.spec.model import ApprovalSpec, ApproversSpec, StepSpec

_A = ApprovalStatus


@dataclass(frozen=True, slots=True)
class Opening:
    """An approval request to open: the gate, who decides, until when, what it replaces."""

    gate: Gate
    approvers: Approvers
    deadline_at: datetime
    on_timeout: OnTimeout
    escalate_to: Approvers | None
    previous: Approval | None = None


@dataclass(frozen=True, slots=True)
class GateCheck:
    """Where the gates of one step stand and what the worker must write."""

    #: Every gate is granted for the current digest: the step may start.
    cleared: bool = False
    #: A gate was rejected or expired: the step fails with this message.
    refused: str | None = None
    supersede: tuple[Approval, ...] = ()
    expire: tuple[Approval, ...] = ()
    escalate: tuple[Approval, ...] = ()
    open: tuple[Opening, ...] = ()
    #: The earliest deadline of a pending approval.
    wake_at: datetime | None = None


@dataclass(slots=True)
class _Collector:
    cleared: bool = True
    refused: list[str] = field(default_factory=list)
    supersede: list[Approval] = field(default_factory=list)
    expire: list[Approval] = field(default_factory=list)
    escalate: list[Approval] = field(default_factory=list)
    open: list[Opening] = field(default_factory=list)
    wake_at: datetime | None = None


def check_gates(
    gates: Sequence[Gate], approvals: Sequence[Approval], digests: Mapping[str, str], now: datetime
) -> GateCheck:
    """The state of ``gates`` given every approval of the execution; ``digests`` by step key."""
    found = _Collector()
    for gate in gates:
        _check_one(gate, _newest(approvals, gate), digests[gate.step_key], now, found)
    if found.refused:
        return GateCheck(refused="; ".join(found.refused), expire=tuple(found.expire))
    return GateCheck(
        cleared=found.cleared and not found.open,
        supersede=tuple(found.supersede),
        expire=tuple(found.expire),
        escalate=tuple(found.escalate),
        open=tuple(found.open),
        wake_at=found.wake_at,
    )


def _check_one(
    gate: Gate, newest: Approval | None, digest: str, now: datetime, found: _Collector
) -> None:
    if newest is None or newest.status is _A.CANCELLED:
        found.cleared = False
        found.open.append(opening(gate, now))
    elif newest.status is _A.GRANTED:
        if newest.digest != digest:  # granted for another plan: ask again
            found.cleared = False
            found.open.append(opening(gate, now, previous=newest))
    elif newest.status is _A.PENDING:
        found.cleared = False
        if newest.digest != digest:
            found.supersede.append(newest)
            found.open.append(opening(gate, now, previous=newest))
        elif newest.deadline_at is not None and newest.deadline_at <= now:
            if newest.on_timeout is OnTimeout.ESCALATE and newest.escalate_to is not None:
                found.escalate.append(newest)
                found.open.append(escalation(gate, newest, now))
            else:
                found.expire.append(newest)
                found.refused.append(
                    f"approval {newest.id} ({gate.name}) expired at "
                    f"{newest.deadline_at.isoformat()} without a decision; gates fail closed"
                )
        elif newest.deadline_at is not None:
            found.wake_at = min(found.wake_at or newest.deadline_at, newest.deadline_at)
    elif newest.status is _A.ESCALATED:  # its replacement was never written (a crash)
        found.cleared = False
        found.open.append(escalation(gate, newest, now))
    elif newest.status is _A.SUPERSEDED:
        found.cleared = False
        found.open.append(opening(gate, now, previous=newest))
    else:
        found.refused.append(refusal(newest))


def refusal(approval: Approval) -> str:
    """Why a rejected or expired approval stops its step."""
    if approval.status is _A.REJECTED:
        rejection = next(
            (d for d in approval.decisions if d.decision is ApprovalDecisionKind.REJECTED), None
        )
        if rejection is not None:
            return (
                f"approval {approval.id} ({approval.gate}) was rejected by {rejection.principal}: "
                f"{rejection.comment}"
            )
    return f"approval {approval.id} ({approval.gate}) is {approval.status}"


def opening(gate: Gate, now: datetime, *, previous: Approval | None = None) -> Opening:
    """A fresh request for ``gate`` with its full timeout."""
    spec = gate.spec
    return Opening(
        gate=gate,
        approvers=_approvers(spec.approvers),
        deadline_at=now + spec.timeout,
        on_timeout=OnTimeout(spec.on_timeout),
        escalate_to=_approvers(spec.escalate_to) if spec.escalate_to else None,
        previous=previous,
    )


def escalation(gate: Gate, escalated: Approval, now: datetime) -> Opening:
    """The request that replaces an escalated one: its escalation approvers, rejecting at the
    end of ``escalation_timeout`` (default: ``timeout``)."""
    spec = gate.spec
    assert escalated.escalate_to is not None
    return Opening(
        gate=gate,
        approvers=escalated.escalate_to,
        deadline_at=now + (spec.escalation_timeout or spec.timeout),
        on_timeout=OnTimeout.REJECT,
        escalate_to=None,
        previous=escalated,
    )


def step_digest(
    step: StepSpec | None,
    params: Mapping[str, Any],
    targets: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Any],
) -> str:
    """The digest an approval of ``step`` (``None``: the whole execution) is bound to."""
    document = {
        "step": None if step is None else step.model_dump(mode="json", by_alias=True),
        "params": dict(params),
        "targets": [dict(target) for target in targets],
        "inputs": dict(inputs),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def step_inputs(step: StepSpec, runs: Sequence[StepRun]) -> dict[str, Any]:
    """The outputs of the steps ``step`` depends on, as approvers would see them."""
    inputs: dict[str, Any] = {}
    for dependency in step.depends_on:
        found = sorted(
            (run for run in runs if run.step_id == dependency),
            key=lambda run: (run.item_index if run.item_index is not None else -1, run.item_key),
        )
        inputs[dependency] = [dict(run.outputs or {}) for run in found]
    return inputs


def digests_for(
    steps: Sequence[StepSpec],
    step_keys: Sequence[str],
    params: Mapping[str, Any],
    targets: Sequence[Mapping[str, Any]],
    runs: Sequence[StepRun],
) -> dict[str, str]:
    """The current digest of each step key (a step id, or the execution's gate key)."""
    by_id = {step.id: step for step in steps}
    digests = {}
    for key in step_keys:
        if key == EXECUTION_GATE_STEP:
            digests[key] = step_digest(None, params, targets, {})
        else:
            step = by_id[key]
            digests[key] = step_digest(step, params, targets, step_inputs(step, runs))
    return digests


def granted_responses(approvals: Sequence[Approval]) -> dict[str, dict[str, Any]]:
    """What templates read as ``approvals.<step>``: the granted gates' merged ``response`` and
    who approved them."""
    found: dict[str, dict[str, Any]] = {}
    for approval in approvals:
        if approval.status is not _A.GRANTED:
            continue
        entry = found.setdefault(approval.step_id, {"response": {}, "approved_by": []})
        for decision in approval.decisions:
            if decision.decision is ApprovalDecisionKind.GRANTED:
                entry["response"].update(decision.response or {})
                entry["approved_by"].append(decision.principal)
    return found


def response_schema(spec: ApprovalSpec) -> dict[str, Any] | None:
    """The fields an approver fills in when deciding (``response:``), as stored with the request."""
    if not spec.response:
        return None
    return {
        name: field.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for name, field in spec.response.items()
    }


def _newest(approvals: Sequence[Approval], gate: Gate) -> Approval | None:
    chain = [a for a in approvals if a.step_id == gate.step_key and a.gate == gate.name]
    replaced = {a.previous_approval_id for a in chain}
    # The row nothing replaced; two requests in one instant are told apart by the chain.
    current = [a for a in chain if a.id not in replaced]
    return max(current, key=lambda a: (a.created_at, a.id), default=None)


def _approvers(spec: ApproversSpec) -> Approvers:
    return Approvers(roles=tuple(spec.roles), principals=tuple(spec.principals))

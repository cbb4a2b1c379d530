"""Approvals: requests, append-only decisions, and decided gates."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from opsgate.engine.statuses import ApprovalStatus, Trigger
from opsgate.errors import ConflictError, InvalidTransitionError, NotFoundError
from opsgate.models import ApprovalDecisionKind, Approvers, Channel, EventType, OnTimeout
from opsgate.stores import SQLStore
from tests.stores.builders import new_approval, running_execution

GRANTED = ApprovalDecisionKind.GRANTED
REJECTED = ApprovalDecisionKind.REJECTED


def test_a_requested_approval_is_pending_with_its_event_in_the_executions_log(
    store: SQLStore,
) -> None:
    execution = running_execution(store)
    deadline = execution.created_at + timedelta(hours=4)
    approval, event = store.create_approval(
        execution_id=execution.id,
        step_id="restart",
        digest="a" * 64,
        approvers=Approvers(roles=("ops-manager",), principals=("carol",)),
        quorum=2,
        allow_self_approval=False,
        requested_by="alice",
        on_timeout=OnTimeout.ESCALATE,
        escalate_to=Approvers(roles=("director",)),
        deadline_at=deadline,
        response_schema={"type": "object"},
        actor="worker-1",
    )
    assert approval.status is ApprovalStatus.PENDING
    assert approval.approvers == Approvers(roles=("ops-manager",), principals=("carol",))
    assert approval.escalate_to == Approvers(roles=("director",))
    assert (approval.deadline_at, approval.decisions) == (deadline, ())
    assert store.get_approval(approval.id) == approval
    assert (event.seq, event.type, event.step_id) == (3, EventType.APPROVAL_REQUESTED, "restart")
    assert event.data["approval_id"] == approval.id


def test_decisions_are_recorded_in_order_with_their_events(store: SQLStore) -> None:
    approval = new_approval(store, running_execution(store), quorum=2)
    bob = store.add_decision(
        approval.id, principal="bob", decision=GRANTED, channel=Channel.MCP, comment="ok"
    )
    carol = store.add_decision(
        approval.id,
        principal="carol",
        decision=GRANTED,
        channel=Channel.CLI,
        response={"ticket": "CHG-1"},
    )
    assert store.get_approval(approval.id).decisions == (bob, carol)
    assert (carol.channel, carol.response) == (Channel.CLI, {"ticket": "CHG-1"})
    events = store.list_events(approval.execution_id, after_seq=3)
    assert [(e.type, e.actor, e.data["decision"]) for e in events] == [
        (EventType.APPROVAL_DECISION_RECORDED, "bob", "granted"),
        (EventType.APPROVAL_DECISION_RECORDED, "carol", "granted"),
    ]


def test_the_same_decision_by_the_same_principal_is_recorded_once(store: SQLStore) -> None:
    approval = new_approval(store, running_execution(store), quorum=2)
    first = store.add_decision(approval.id, principal="bob", decision=GRANTED, channel=Channel.MCP)
    again = store.add_decision(
        approval.id, principal="bob", decision=GRANTED, channel=Channel.CLI, comment="retry"
    )
    assert again == first
    assert len(store.get_approval(approval.id).decisions) == 1
    assert len(store.list_events(approval.execution_id, after_seq=3)) == 1


def test_a_decided_approval_takes_no_new_decision_but_repeats_an_old_one(
    store: SQLStore,
) -> None:
    approval = new_approval(store, running_execution(store))
    bob = store.add_decision(approval.id, principal="bob", decision=GRANTED, channel=Channel.MCP)
    store.transition_approval(
        approval.id, Trigger.APPROVE, expected=ApprovalStatus.PENDING, actor="bob"
    )
    with pytest.raises(ConflictError, match=f"approval {approval.id} is already granted"):
        store.add_decision(approval.id, principal="carol", decision=REJECTED, channel=Channel.MCP)
    assert (
        store.add_decision(approval.id, principal="bob", decision=GRANTED, channel=Channel.MCP)
        == bob
    )


def test_a_decision_on_an_unknown_approval_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="approval 'apr_missing'"):
        store.add_decision("apr_missing", principal="bob", decision=GRANTED, channel=Channel.MCP)
    with pytest.raises(NotFoundError, match="approval 'apr_missing'"):
        store.get_approval("apr_missing")


def test_granting_an_approval_stamps_the_decision_time_and_appends_its_event(
    store: SQLStore,
) -> None:
    approval = new_approval(store, running_execution(store))
    decision = store.add_decision(
        approval.id, principal="bob", decision=GRANTED, channel=Channel.ELICITATION
    )
    granted, event = store.transition_approval(
        approval.id,
        Trigger.APPROVE,
        expected=ApprovalStatus.PENDING,
        actor="bob",
        data={"quorum_reached": 1},
    )
    assert (granted.status, granted.decided_at) == (ApprovalStatus.GRANTED, event.occurred_at)
    assert granted.decisions == (decision,)
    assert (event.type, event.seq, event.step_id) == (EventType.APPROVAL_GRANTED, 5, "restart")
    assert event.data == {"approval_id": approval.id, "quorum_reached": 1}


def test_a_lost_approval_compare_and_set_changes_nothing(store: SQLStore) -> None:
    approval = new_approval(store, running_execution(store))
    store.transition_approval(
        approval.id, Trigger.EXPIRE, expected=ApprovalStatus.PENDING, actor="scheduler"
    )
    with pytest.raises(InvalidTransitionError, match="it is expired"):
        store.transition_approval(
            approval.id, Trigger.APPROVE, expected=ApprovalStatus.EXPIRED, actor="bob"
        )
    with pytest.raises(ConflictError, match="it is now expired, not pending"):
        store.transition_approval(
            approval.id, Trigger.APPROVE, expected=ApprovalStatus.PENDING, actor="bob"
        )
    assert store.get_approval(approval.id).status is ApprovalStatus.EXPIRED
    assert store.get_execution(approval.execution_id).last_seq == 4


def test_an_escalation_links_the_new_approval_to_the_old_one(store: SQLStore) -> None:
    execution = running_execution(store)
    old = new_approval(store, execution, on_timeout=OnTimeout.ESCALATE)
    store.transition_approval(
        old.id, Trigger.ESCALATE, expected=ApprovalStatus.PENDING, actor="scheduler"
    )
    new = new_approval(
        store, execution, approvers=Approvers(roles=("director",)), previous_approval_id=old.id
    )
    assert new.previous_approval_id == old.id
    assert [a.id for a in store.list_approvals(status=ApprovalStatus.PENDING)] == [new.id]
    assert [a.id for a in store.list_approvals(execution_id=execution.id)] == [old.id, new.id]


def test_concurrent_decisions_are_each_recorded_once(store: SQLStore) -> None:
    approval = new_approval(store, running_execution(store), quorum=3)
    principals = ["bob", "carol", "dave"] * 3
    start = threading.Barrier(len(principals))

    def decide(principal: str) -> int:
        start.wait()
        decision = store.add_decision(
            approval.id, principal=principal, decision=GRANTED, channel=Channel.MCP
        )
        return decision.id

    with ThreadPoolExecutor(len(principals)) as pool:
        ids = list(pool.map(decide, principals))
    decisions = store.get_approval(approval.id).decisions
    assert sorted(d.principal for d in decisions) == ["bob", "carol", "dave"]
    assert set(ids) == {d.id for d in decisions}
    seqs = [e.seq for e in store.list_events(approval.execution_id)]
    assert seqs == list(range(1, 7))

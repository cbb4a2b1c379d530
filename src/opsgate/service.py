"""The use cases: one coroutine each, called by the MCP tools and the CLI alike.

The service validates requests, reads and writes through the store (in worker threads: the
store is synchronous), and wakes the local worker when it created or changed work. It never
runs steps itself. Who calls comes from authentication, as a :class:`Principal`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from opsgate.approvals import (
    already_decided_alike,
    checked_response,
    confirmation_text,
    decision_refusal,
    is_confirmation,
    settled,
)
from opsgate.catalog import Catalog
from opsgate.engine.gates import digests_for
from opsgate.engine.locks import lock_keys, policy_lock_key
from opsgate.engine.rollback import needs_rollback
from opsgate.engine.statuses import (
    EXECUTION_MACHINE,
    EXECUTION_TERMINAL,
    ApprovalStatus,
    ExecutionStatus,
    StepRunStatus,
    Trigger,
    next_status,
)
from opsgate.errors import (
    ApprovalRefusedError,
    ConflictError,
    InvalidParametersError,
    InvalidTransitionError,
    NotFoundError,
    OpsgateError,
    PolicyDeniedError,
    StalePlanError,
)
from opsgate.expressions import ExpressionError
from opsgate.inventory import Inventory, names_as_targets
from opsgate.models import (
    Approval,
    ApprovalDecisionKind,
    Channel,
    Execution,
    MisfirePolicy,
    NewFire,
    OverlapPolicy,
    Schedule,
    canonical_json,
)
from opsgate.planning import build_plan, masked, verdict_view
from opsgate.planning import plan_digest as digest_of_plan
from opsgate.policy import PolicyRequest, Verdict, evaluate_policies
from opsgate.presenting import (
    approval_view,
    decode_name_cursor,
    encode_name_cursor,
    schedule_view,
    status_view,
    targets_view,
    upcoming_fires,
    workflow_details,
    workflow_summary,
)
from opsgate.schedules.fires import first_fire
from opsgate.schedules.validation import (
    DEFAULT_CATCHUP_WINDOW_SECONDS,
    DEFAULT_MISFIRE_GRACE_SECONDS,
    InvalidScheduleError,
    ScheduleProblem,
    ScheduleRequest,
    check_schedule,
)
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.parameters import validate_parameters
from opsgate.stores.calls import call_store
from opsgate.stores.sql import ScheduleChanges, SQLStore, utc_now
from opsgate.views import (
    ApprovalList,
    ApprovalView,
    EventList,
    EventView,
    ExecutionList,
    ExecutionStarted,
    ExecutionStatusView,
    ExecutionSummary,
    MetricsList,
    PlanView,
    ScheduleList,
    ScheduleView,
    UpcomingList,
    VerdictView,
    WorkflowDetails,
    WorkflowList,
    WorkflowMetricsView,
    WorkflowTargetsView,
)

T = TypeVar("T")
_E = ExecutionStatus
_S = StepRunStatus
_RERUNNABLE = frozenset({_S.FAILED, _S.TIMED_OUT, _S.INTERRUPTED, _S.CANCELLED})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and its roles."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


class Service:
    """The application facade over the store, the catalog and the worker."""

    def __init__(
        self,
        store: SQLStore,
        catalog: Catalog,
        *,
        wake: Callable[[str | None], None] = lambda _: None,
        inventory: Inventory | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.wake = wake
        self.inventory = inventory
        #: Set by the runtime to the scheduler's ``wake``: schedules changed.
        self.wake_scheduler: Callable[[], None] = lambda: None
        #: What the service takes as now (verdicts, first and upcoming fires); tests inject theirs.
        self.clock: Callable[[], datetime] = utc_now

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    # ----------------------------------------------------------------- starting

    def blueprint(self, workflow_name: str) -> WorkflowSpec:
        """A served blueprint by name, or NotFoundError with close matches."""
        spec = self.catalog.blueprints.get(workflow_name)
        if spec is None:
            raise NotFoundError("workflow", workflow_name, self.catalog.blueprints)
        return spec

    async def execute_workflow(
        self,
        principal: Principal,
        workflow_name: str,
        parameters: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        plan_digest: str | None = None,
        fire: NewFire | None = None,
    ) -> ExecutionStarted:
        """Validate the parameters, check the policies (and the reviewed plan's digest),
        snapshot the blueprint and create a pending execution."""
        spec = self.blueprint(workflow_name)
        values, problems = validate_parameters(spec.parameters, parameters)
        if problems:
            raise InvalidParametersError(workflow_name, problems)
        content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        targets = self._targets(spec, values)
        verdict = self._verdict(principal, spec, values, targets)
        if not verdict.allowed:
            raise PolicyDeniedError(f"{workflow_name}: {verdict.explain()}")
        if plan_digest is not None:
            current = digest_of_plan(content, values, targets, verdict)
            if current != plan_digest:
                raise StalePlanError(
                    f"the plan of {workflow_name} changed since it was reviewed (digest "
                    f"{plan_digest} is now {current}): call plan_workflow again, review it, "
                    "and execute with the new plan_digest"
                )
        # Creating is two short calls on the hot path: on SQLite they run here (call_store).
        snapshot = await call_store(
            self.store, self.store.save_snapshot, spec.name, spec.version, content
        )
        execution, created = await call_store(
            self.store,
            self.store.create_execution,
            workflow_name=spec.name,
            blueprint_digest=snapshot.digest,
            parameters=values,
            requested_by=principal.name,
            idempotency_key=idempotency_key,
            fire=fire,
            locks=[(key, spec.concurrency.max_concurrent) for key in lock_keys(spec, values)]
            if spec.concurrency is not None
            else (),
            refuse_queued=spec.concurrency is not None and spec.concurrency.on_conflict == "reject",
        )
        if created and execution.status is _E.FAILED:
            raise ConflictError(
                f"{spec.name} refuses to queue (on_conflict: reject) and "
                f"{(execution.error or {}).get('message', 'its locks are held')}; execution "
                f"{execution.id} was recorded as failed. Try again when they finish."
            )
        self.wake(execution.id)
        return ExecutionStarted(
            execution_id=execution.id,
            workflow_name=spec.name,
            status=str(execution.status),
            created=created,
            next_step=f"call get_workflow_status(execution_id={execution.id!r}) to follow it",
        )

    # ----------------------------------------------------------------- catalog

    async def list_workflows(
        self, *, category: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> WorkflowList:
        """The served blueprints by name, a page at a time (``cursor`` = the last name seen)."""
        after = decode_name_cursor(cursor)
        names = sorted(
            name
            for name, spec in self.catalog.blueprints.items()
            if (category is None or spec.category == category) and name > after
        )
        page = names[:limit]
        return WorkflowList(
            workflows=[workflow_summary(self.catalog.blueprints[name]) for name in page],
            next_cursor=encode_name_cursor(page[-1]) if len(names) > limit else None,
        )

    async def get_workflow_details(self, workflow_name: str) -> WorkflowDetails:
        """Parameters, targets, steps with their gates, locks and rollback of one blueprint."""
        return workflow_details(self.blueprint(workflow_name))

    # ----------------------------------------------------------------- reading

    async def get_workflow_status(self, execution_id: str) -> ExecutionStatusView:
        execution = await self._call(self.store.get_execution, execution_id)
        runs = await self._call(self.store.list_step_runs, execution_id)
        spec = await self._call(self._spec_of, execution)
        return status_view(spec, execution, runs)

    def _spec_of(self, execution: Execution) -> WorkflowSpec:
        snapshot = self.store.get_snapshot(execution.blueprint_digest)
        return WorkflowSpec.model_validate(snapshot.content)

    def _locks_of(self, execution: Execution) -> list[tuple[str, int]]:
        """Every lock an execution holds while it runs: its blueprint's keys, then the place a
        policy's ``max_concurrent`` gives it (judged for its requester, as the worker does)."""
        spec = self._spec_of(execution)
        values = execution.parameters
        locks = []
        if spec.concurrency is not None:
            locks = [(key, spec.concurrency.max_concurrent) for key in lock_keys(spec, values)]
        requester = Principal(
            execution.requested_by, self.catalog.roles.roles_of(execution.requested_by)
        )
        verdict = self._verdict(requester, spec, values, self._targets(spec, values))
        if verdict.limits.max_concurrent is not None:
            locks.append((policy_lock_key(spec.name), verdict.limits.max_concurrent))
        return locks

    async def list_executions(
        self,
        *,
        workflow_name: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ExecutionList:
        page = await self._call(
            self.store.list_executions,
            workflow_name=workflow_name,
            status=ExecutionStatus(status) if status else None,
            cursor=cursor,
            limit=limit,
        )
        return ExecutionList(
            executions=[
                ExecutionSummary(
                    execution_id=e.id,
                    workflow_name=e.workflow_name,
                    status=str(e.status),
                    requested_by=e.requested_by,
                    created_at=e.created_at,
                    finished_at=e.finished_at,
                )
                for e in page.items
            ],
            next_cursor=page.next_cursor,
        )

    async def get_execution_events(
        self, execution_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> EventList:
        await self._call(self.store.get_execution, execution_id)
        events = await self._call(
            self.store.list_events, execution_id, after_seq=after_seq, limit=limit + 1
        )
        more = len(events) > limit
        events = events[:limit]
        return EventList(
            execution_id=execution_id,
            events=[
                EventView(
                    seq=e.seq or 0,
                    type=str(e.type),
                    occurred_at=e.occurred_at,
                    actor=e.actor,
                    step_id=e.step_id,
                    target=e.target,
                    attempt=e.attempt,
                    data=dict(e.data or {}),
                )
                for e in events
            ],
            next_after_seq=(events[-1].seq if more and events else None),
        )

    async def get_workflow_metrics(self, workflow_name: str | None = None) -> MetricsList:
        """Per blueprint: success rate, duration p50/p95, failures, rollbacks, approval waits."""
        if workflow_name is not None:
            self.blueprint(workflow_name)
        found = await self._call(self.store.workflow_metrics, workflow_name)
        return MetricsList(
            metrics=[WorkflowMetricsView.model_validate(m, from_attributes=True) for m in found]
        )

    # ----------------------------------------------------------------- control

    async def cancel_execution(
        self,
        principal: Principal,
        execution_id: str,
        *,
        cleanup: bool = True,
        reason: str | None = None,
    ) -> ExecutionStatusView:
        """Stop an execution; with ``cleanup`` its completed steps are rolled back."""
        data = {"reason": reason, "cleanup": cleanup}
        execution = await self._control(
            principal, execution_id, Trigger.CANCEL, data, cancel_cleanup=cleanup
        )
        if execution.lease_owner is None:
            # No worker holds it (queued, parked, waiting): finish the cancel here.
            await self._call(self.store.cancel_open_approvals, execution_id, actor=principal.name)
            spec = await self._call(self._spec_of, execution)
            runs = await self._call(self.store.list_step_runs, execution_id)
            if cleanup and needs_rollback(spec, runs):
                await self._call(
                    self.store.transition_execution,
                    execution_id,
                    Trigger.BEGIN_ROLLBACK,
                    expected=_E.CANCELLED,
                    actor=principal.name,
                )  # a worker claims it to roll back, and frees its locks at the end
            else:
                await self._call(self.store.release_locks, execution_id, actor=principal.name)
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def pause_execution(self, principal: Principal, execution_id: str) -> ExecutionStatusView:
        """No new step starts; running ones finish. Resume with resume_execution."""
        await self._control(principal, execution_id, Trigger.PAUSE, {})
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def resume_execution(
        self, principal: Principal, execution_id: str
    ) -> ExecutionStatusView:
        await self._control(principal, execution_id, Trigger.RESUME, {})
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def retry_step(
        self, principal: Principal, execution_id: str, step_id: str
    ) -> ExecutionStatusView:
        """Run a failed step again and continue the execution from there.

        A failed execution takes its locks and its policy place back to run again (passed
        always: it may fail between a read here and the rerun)."""
        execution = await self._call(self.store.get_execution, execution_id)
        locks = await self._call(self._locks_of, execution)
        await self._call(
            self.store.rerun_step, execution_id, step_id, actor=principal.name, locks=locks
        )
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def _control(
        self,
        principal: Principal,
        execution_id: str,
        trigger: Trigger,
        data: Mapping[str, Any],
        **changes: Any,
    ) -> Execution:
        """Apply an operator's transition from whatever the status is now (checked by the table)."""
        for _ in range(5):
            execution = await self._call(self.store.get_execution, execution_id)
            next_status(EXECUTION_MACHINE, execution.status, trigger, entity_id=execution_id)
            try:
                updated, _ = await self._call(
                    self.store.transition_execution,
                    execution_id,
                    trigger,
                    expected=execution.status,
                    actor=principal.name,
                    data=dict(data),
                    **changes,
                )
            except ConflictError:
                continue  # the status moved meanwhile: judge again from the new one
            return updated
        raise ConflictError(f"execution {execution_id} keeps changing; try again")

    # ----------------------------------------------------------------- governance

    def _targets(self, spec: WorkflowSpec, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The targets a run would address, resolved as the worker resolves them."""
        if self.inventory is None:
            return names_as_targets(spec, values)
        return self.inventory.for_workflow(spec, values)

    def _verdict(
        self,
        principal: Principal,
        spec: WorkflowSpec,
        values: Mapping[str, Any],
        targets: Sequence[Mapping[str, Any]],
        now: datetime | None = None,
    ) -> Verdict:
        return evaluate_policies(
            self.catalog.policies,
            PolicyRequest(
                blueprint=spec,
                params=masked(spec, values),
                principal=principal.name,
                roles=principal.roles,
                targets=targets,
                now=now or self.clock(),
            ),
        )

    def _checked(
        self, workflow_name: str, parameters: Mapping[str, Any]
    ) -> tuple[WorkflowSpec, dict[str, Any]]:
        spec = self.blueprint(workflow_name)
        values, problems = validate_parameters(spec.parameters, parameters)
        if problems:
            raise InvalidParametersError(workflow_name, problems)
        return spec, values

    async def validate_workflow_policies(
        self, principal: Principal, workflow_name: str, parameters: Mapping[str, Any]
    ) -> VerdictView:
        """The policy verdict for running ``workflow_name`` with ``parameters`` as ``principal``."""
        spec, values = self._checked(workflow_name, parameters)
        verdict = self._verdict(principal, spec, values, self._targets(spec, values))
        return verdict_view(spec.name, verdict, self.catalog.roles)

    async def plan_workflow(
        self, principal: Principal, workflow_name: str, parameters: Mapping[str, Any]
    ) -> PlanView:
        """What an execution would do, with the verdict, the gates and a ``plan_digest``."""
        spec, values = self._checked(workflow_name, parameters)
        targets = self._targets(spec, values)
        verdict = self._verdict(principal, spec, values, targets)
        content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        digest = digest_of_plan(content, values, targets, verdict)
        return build_plan(spec, values, targets, verdict, self.catalog.roles, digest)

    async def list_pending_approvals(self, principal: Principal) -> ApprovalList:
        """Pending approvals that ``principal`` may decide, oldest first."""
        pending = await self._call(self.store.list_approvals, status=ApprovalStatus.PENDING)
        mine = [a for a in pending if decision_refusal(a, principal.name, principal.roles) is None]
        return ApprovalList(approvals=[await self._approval_view(a) for a in mine])

    async def approve_step(
        self,
        principal: Principal,
        approval_id: str,
        *,
        comment: str | None = None,
        response: Mapping[str, Any] | None = None,
        channel: Channel = Channel.MCP,
    ) -> ApprovalView:
        """Approve; the gate opens once its quorum of distinct approvers has approved."""
        return await self._decide(
            principal, approval_id, ApprovalDecisionKind.GRANTED, comment, response, channel
        )

    async def reject_step(
        self,
        principal: Principal,
        approval_id: str,
        *,
        comment: str,
        channel: Channel = Channel.MCP,
    ) -> ApprovalView:
        """Reject (a comment saying why is required); the step fails and rollback runs."""
        if not comment or not comment.strip():
            raise ApprovalRefusedError(
                f"rejecting approval {approval_id} needs a comment saying why; the requester "
                "and the audit log read it"
            )
        return await self._decide(
            principal, approval_id, ApprovalDecisionKind.REJECTED, comment, None, channel
        )

    async def _decide(
        self,
        principal: Principal,
        approval_id: str,
        decision: ApprovalDecisionKind,
        comment: str | None,
        response: Mapping[str, Any] | None,
        channel: Channel,
    ) -> ApprovalView:
        approval = await self._call(self.store.get_approval, approval_id)
        if already_decided_alike(approval, principal.name, decision):
            return await self._approval_view(approval)  # the same call again: idempotent
        refusal = decision_refusal(approval, principal.name, principal.roles)
        if refusal is not None:
            if await self.confirmation_question(principal, approval_id) is not None:
                refusal += (
                    "; as its requester you may confirm this step yourself in a client that "
                    "supports elicitation (approve_step asks you there)"
                )
            raise ApprovalRefusedError(refusal)
        execution = await self._call(self.store.get_execution, approval.execution_id)
        if execution.status in EXECUTION_TERMINAL:
            raise ApprovalRefusedError(
                f"approval {approval_id} belongs to execution {execution.id}, which is "
                f"{execution.status}: there is nothing left to approve"
            )
        answer = None
        if decision is ApprovalDecisionKind.GRANTED:
            answer = checked_response(approval, response)
        await self._supersede_if_stale(approval, execution, principal)
        await self._call(
            self.store.add_decision,
            approval_id,
            principal=principal.name,
            decision=decision,
            channel=channel,
            comment=comment,
            response=answer,
        )
        approval = await self._call(self.store.get_approval, approval_id)
        trigger = settled(approval)
        if trigger is None:
            return await self._approval_view(approval)
        return await self._settle(approval_id, trigger, principal, execution.id)

    async def _settle(
        self, approval_id: str, trigger: Trigger, principal: Principal, execution_id: str
    ) -> ApprovalView:
        """Grant or reject a pending approval, and wake its execution to act on it."""
        approval, _ = await self._call(
            self.store.transition_approval,
            approval_id,
            trigger,
            expected=ApprovalStatus.PENDING,
            actor=principal.name,
        )
        await self._call(self.store.wake_execution, execution_id)
        self.wake(execution_id)
        return await self._approval_view(approval)

    async def _supersede_if_stale(
        self, approval: Approval, execution: Execution, principal: Principal
    ) -> None:
        """Refuse a decision on a plan that changed (targets, inputs); the worker asks again."""
        spec = await self._call(self._spec_of, execution)
        runs = await self._call(self.store.list_step_runs, execution.id)
        targets = self._targets(spec, execution.parameters)
        current = digests_for(spec.steps, [approval.step_id], execution.parameters, targets, runs)
        if current[approval.step_id] == approval.digest:
            return
        await self._call(
            self.store.transition_approval,
            approval.id,
            Trigger.SUPERSEDE,
            expected=ApprovalStatus.PENDING,
            actor=principal.name,
            data={"reason": "the plan changed (targets or inputs) since it was requested"},
        )
        await self._call(self.store.wake_execution, execution.id)
        self.wake(execution.id)
        raise ApprovalRefusedError(
            f"the plan of step {approval.step_id!r} changed (its targets or inputs) since "
            f"approval {approval.id} was requested: it is superseded and a new approval is "
            "being requested; call list_pending_approvals and decide the new one"
        )

    async def _approval_view(self, approval: Approval) -> ApprovalView:
        execution = await self._call(self.store.get_execution, approval.execution_id)
        spec = await self._call(self._spec_of, execution)
        return approval_view(approval, execution.workflow_name, is_confirmation(approval, spec))

    async def confirmation_question(self, principal: Principal, approval_id: str) -> str | None:
        """What to ask ``principal`` in their client when they may confirm ``approval_id`` (a
        pending ``confirm: true`` gate of an execution they requested); else ``None``."""
        approval = await self._call(self.store.get_approval, approval_id)
        if approval.status is not ApprovalStatus.PENDING or approval.requested_by != principal.name:
            return None
        execution = await self._call(self.store.get_execution, approval.execution_id)
        spec = await self._call(self._spec_of, execution)
        if not is_confirmation(approval, spec):
            return None
        return confirmation_text(approval, spec, execution.id)

    async def confirm_step(
        self, principal: Principal, approval_id: str, *, confirmed: bool, comment: str | None
    ) -> ApprovalView:
        """The requester's answer to a ``confirm: true`` gate, given in their client (MCP
        elicitation): confirmed opens the gate, anything else rejects it."""
        if await self.confirmation_question(principal, approval_id) is None:
            raise ApprovalRefusedError(
                f"approval {approval_id} is not a pending confirmation of an execution "
                f"{principal.name} requested; decide it with approve_step or reject_step"
            )
        approval = await self._call(self.store.get_approval, approval_id)
        execution = await self._call(self.store.get_execution, approval.execution_id)
        await self._supersede_if_stale(approval, execution, principal)
        kind = ApprovalDecisionKind.GRANTED if confirmed else ApprovalDecisionKind.REJECTED
        note = comment or ("confirmed in the client" if confirmed else "declined in the client")
        await self._call(
            self.store.add_decision,
            approval_id,
            principal=principal.name,
            decision=kind,
            channel=Channel.ELICITATION,
            comment=note,
        )
        trigger = Trigger.APPROVE if confirmed else Trigger.REJECT
        return await self._settle(approval_id, trigger, principal, execution.id)

    # ----------------------------------------------------------------- targets

    async def get_workflow_targets(
        self, workflow_name: str, parameters: Mapping[str, Any]
    ) -> WorkflowTargetsView:
        """The targets a run with ``parameters`` would address, and why each inventory target
        is in or out; an unknown name, group or label is a NotFoundError with close matches."""
        spec = self.blueprint(workflow_name)
        values, problems = validate_parameters(spec.parameters, parameters)
        if problems:
            raise InvalidParametersError(workflow_name, problems)
        return targets_view(spec, values, self.inventory)

    # ----------------------------------------------------------------- schedules

    async def schedule_workflow(
        self,
        principal: Principal,
        workflow_name: str,
        cron: str,
        timezone: str = "UTC",
        parameters: Mapping[str, Any] | None = None,
        *,
        overlap_policy: str = OverlapPolicy.SKIP,
        misfire_policy: str = MisfirePolicy.RUN_ONCE,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        enabled: bool = True,
        catchup_window_seconds: int = DEFAULT_CATCHUP_WINDOW_SECONDS,
        misfire_grace_seconds: int = DEFAULT_MISFIRE_GRACE_SECONDS,
        idempotency_key: str | None = None,
    ) -> ScheduleView:
        """Check everything at once (cron, timezone, parameters, policies, times), then save a
        schedule owned by ``principal``; returns it with its next fire times explained."""
        if idempotency_key is not None:
            found = await self._call(self.store.find_schedule, principal.name, idempotency_key)
            if found is not None:
                spec = self.catalog.blueprints.get(workflow_name)
                given = dict(parameters or {})
                values = validate_parameters(spec.parameters, given)[0] if spec else given
                return _same_schedule(found, workflow_name, cron, timezone, values)
        request = self._check_schedule(
            principal,
            workflow_name,
            cron=cron,
            timezone=timezone,
            parameters=parameters or {},
            overlap_policy=overlap_policy,
            misfire_policy=misfire_policy,
            start_at=start_at,
            end_at=end_at,
            catchup_window_seconds=catchup_window_seconds,
            misfire_grace_seconds=misfire_grace_seconds,
        )
        schedule = await self._call(
            self.store.create_schedule,
            workflow_name=workflow_name,
            cron=request.cron.expression,
            timezone=request.cron.timezone,
            parameters=request.parameters,
            owner=principal.name,
            overlap_policy=request.overlap_policy,
            misfire_policy=request.misfire_policy,
            catchup_window_seconds=request.catchup_window_seconds,
            misfire_grace_seconds=request.misfire_grace_seconds,
            next_fire_at=request.next_fire_at if enabled else None,
            enabled=enabled,
            start_at=request.start_at,
            end_at=request.end_at,
            idempotency_key=idempotency_key,
        )
        self.wake_scheduler()
        return schedule_view(schedule)

    async def list_scheduled_workflows(
        self, workflow_name: str | None = None, *, fire_times: int = 3
    ) -> ScheduleList:
        """Every schedule (paused ones too), oldest first, each with its next fire times."""
        found = await self._call(self.store.list_schedules, workflow_name=workflow_name)
        return ScheduleList(schedules=[schedule_view(s, fire_times) for s in found])

    async def get_schedule(self, schedule_id: str) -> ScheduleView:
        return schedule_view(await self._call(self.store.get_schedule, schedule_id))

    async def update_schedule(
        self,
        principal: Principal,
        schedule_id: str,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        overlap_policy: str | None = None,
        misfire_policy: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        enabled: bool | None = None,
        catchup_window_seconds: int | None = None,
        misfire_grace_seconds: int | None = None,
    ) -> ScheduleView:
        """Change a schedule (``None``: unchanged), checked as a whole like a new one.

        ``enabled=False`` pauses it (no fire until resumed); ``enabled=True`` resumes it from
        the next fire after now: fires that fell into the pause are not made up.
        """
        current = await self._call(self.store.get_schedule, schedule_id)
        _check_owner(principal, current, "change")
        request = self._check_schedule(
            principal,
            current.workflow_name,
            cron=_given(cron, current.cron),
            timezone=_given(timezone, current.timezone),
            parameters=_given(parameters, current.parameters),
            overlap_policy=_given(overlap_policy, current.overlap_policy),
            misfire_policy=_given(misfire_policy, current.misfire_policy),
            start_at=_given(start_at, current.start_at),
            end_at=_given(end_at, current.end_at),
            catchup_window_seconds=_given(catchup_window_seconds, current.catchup_window_seconds),
            misfire_grace_seconds=_given(misfire_grace_seconds, current.misfire_grace_seconds),
        )
        active = _given(enabled, current.enabled)
        timing = (request.cron.expression, request.cron.timezone, request.start_at, request.end_at)
        moved = timing != (current.cron, current.timezone, current.start_at, current.end_at)
        next_fire_at = current.next_fire_at
        if not active:
            next_fire_at = None
        elif moved or not current.enabled or next_fire_at is None:
            # Strictly after the last fire too: a fire time is recorded once, ever.
            after = max(filter(None, (self.clock(), current.last_fire_at)))
            next_fire_at = first_fire(request.cron, after, request.start_at, request.end_at)
        values: ScheduleChanges = {
            "cron": request.cron.expression,
            "timezone": request.cron.timezone,
            "parameters": request.parameters,
            "overlap_policy": request.overlap_policy,
            "misfire_policy": request.misfire_policy,
            "start_at": request.start_at,
            "end_at": request.end_at,
            "enabled": active,
            "next_fire_at": next_fire_at,
            "catchup_window_seconds": request.catchup_window_seconds,
            "misfire_grace_seconds": request.misfire_grace_seconds,
        }
        # Only what differs, so that the schedule.updated event says what changed.
        changes: dict[str, Any] = {k: v for k, v in values.items() if getattr(current, k) != v}
        updated = await self._call(
            self.store.update_schedule, schedule_id, actor=principal.name, **changes
        )
        self.wake_scheduler()
        return schedule_view(updated)

    async def delete_schedule(self, principal: Principal, schedule_id: str) -> ScheduleView:
        """Stop a schedule for good; its fires, executions and events stay in the history."""
        current = await self._call(self.store.get_schedule, schedule_id)
        _check_owner(principal, current, "delete")
        deleted = await self._call(self.store.delete_schedule, schedule_id, actor=principal.name)
        self.wake_scheduler()
        return schedule_view(deleted)

    async def get_upcoming_executions(
        self, hours_ahead: float = 24, workflow_name: str | None = None, *, limit: int = 100
    ) -> UpcomingList:
        """The fires of every enabled schedule in the next ``hours_ahead`` hours, in time order."""
        if not 0 < hours_ahead <= MAX_UPCOMING_HOURS:
            raise ValueError(f"hours_ahead must be above 0 and at most {MAX_UPCOMING_HOURS}")
        if not 1 <= limit <= 1000:
            raise ValueError(f"limit must be between 1 and 1000, not {limit}")
        found = await self._call(self.store.list_schedules, workflow_name=workflow_name)
        until = self.clock() + timedelta(hours=hours_ahead)
        upcoming, truncated = upcoming_fires(found, until, limit)
        return UpcomingList(hours_ahead=hours_ahead, executions=upcoming, truncated=truncated)

    async def fire_schedule(
        self, schedule: Schedule, fire: NewFire, *, cancel: Sequence[str] = ()
    ) -> str:
        """Start one fire's execution as the schedule's owner (the scheduler calls this): the
        policies judge the owner now, and the fire is recorded with the execution. Then cancel
        ``cancel``, the executions the overlap policy ``cancel_previous`` replaces."""
        owner = Principal(schedule.owner, self.catalog.roles.roles_of(schedule.owner))
        started = await self.execute_workflow(
            owner, schedule.workflow_name, schedule.parameters, fire=fire
        )
        reason = (
            f"schedule {schedule.id} fired again at {fire.fire_at.isoformat()} "
            "(overlap policy cancel_previous)"
        )
        for execution_id in cancel:
            try:
                await self.cancel_execution(owner, execution_id, cleanup=True, reason=reason)
            except (ConflictError, InvalidTransitionError):
                pass  # it ended meanwhile: nothing left to cancel
        return started.execution_id

    def _check_schedule(
        self, principal: Principal, workflow_name: str, **fields: Any
    ) -> ScheduleRequest:
        """The checked request, or one :class:`InvalidScheduleError` with every problem."""
        spec = self.catalog.blueprints.get(workflow_name)
        problems = []
        if spec is None:
            missing = NotFoundError("workflow", workflow_name, self.catalog.blueprints)
            problems.append(ScheduleProblem("workflow_name", str(missing), "see list_workflows"))
        request, found = check_schedule(spec=spec, now=self.clock(), **fields)
        problems += found
        if request is not None and spec is not None:
            problems += self._policy_problems(principal, spec, request)
        if problems or request is None:
            raise InvalidScheduleError(f"schedule of {workflow_name!r}", problems)
        return request

    def _policy_problems(
        self, principal: Principal, spec: WorkflowSpec, request: ScheduleRequest
    ) -> list[ScheduleProblem]:
        """The policies' verdict for the owner at the first fire time (every fire is judged
        again when it fires), and targets that cannot be resolved."""
        try:
            targets = self._targets(spec, request.parameters)
        except (ExpressionError, OpsgateError) as exc:
            return [ScheduleProblem("targets", str(exc), "check the parameters the targets use")]
        verdict = self._verdict(principal, spec, request.parameters, targets, request.next_fire_at)
        return [
            ScheduleProblem("policy", violation.explain(), "the schedule would be denied")
            for violation in verdict.violations
        ]


# --------------------------------------------------------------------- catalog views


# --------------------------------------------------------------------- schedule views

#: How far ``get_upcoming_executions`` looks ahead at most.
MAX_UPCOMING_HOURS = 24 * 31


def _given(value: T | None, current: T) -> T:
    return current if value is None else value


def _check_owner(principal: Principal, schedule: Schedule, action: str) -> None:
    """Only the owner changes a schedule: its executions run with the owner's rights."""
    if principal.name != schedule.owner:
        raise PolicyDeniedError(
            f"{principal.name} may not {action} schedule {schedule.id}: it belongs to "
            f"{schedule.owner}, and its executions run with {schedule.owner}'s rights. Ask "
            f"{schedule.owner} to {action} it, or create your own schedule."
        )


def _same_schedule(
    found: Schedule,
    workflow_name: str,
    cron: str,
    timezone: str,
    parameters: Mapping[str, Any],
) -> ScheduleView:
    """The schedule an idempotency key created before, if this is the same request."""
    request = (workflow_name, cron, timezone, canonical_json(parameters))
    if request != (
        found.workflow_name,
        found.cron,
        found.timezone,
        canonical_json(found.parameters),
    ):
        raise ConflictError(
            f"idempotency key {found.idempotency_key!r} of {found.owner} was already used for "
            f"schedule {found.id} with another workflow, cron, timezone or parameters; repeat "
            "the original request exactly, or use a new key"
        )
    return schedule_view(found, created=False)

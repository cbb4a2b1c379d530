"""The scheduler: turns due schedules into executions, each fire exactly once.

It sleeps until the earliest ``next_fire_at`` of any enabled schedule (one indexed ``min()``),
or until :meth:`Scheduler.wake` says schedules changed; it never scans every schedule. When
woken it reads only the schedules that are due (``ix_schedules_due``), plans each one's fires
with :func:`opsgate.schedules.fires.plan_due` (grace period, misfire policy, catch-up window),
applies the overlap policy against the schedule's active executions, and starts executions as
the schedule's owner through the service, so policies are evaluated at fire time. A denial is
recorded as ``schedule.denied``, any other refusal as ``schedule.failed``: never a crash.

Exactly once: every fire is recorded under the unique (schedule, fire time) key, with a
compare-and-set on the schedule's ``next_fire_at``, in the same transaction as the execution it
creates. Several schedulers (processes) may share one database: for each fire one commits and
the others roll back and read the schedule again. Schedules changed by another process are
noticed within ``recheck_seconds`` (the sleep's upper bound).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from opsgate.errors import ConflictError, OpsgateError, PolicyDeniedError, StoreError
from opsgate.models import Execution, FireOutcome, NewFire, OverlapPolicy, Schedule
from opsgate.schedules.cron import CronError, parse_cron
from opsgate.schedules.fires import FireStep, plan_due
from opsgate.stores.sql import SQLStore, utc_now

logger = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], datetime]

#: The shortest sleep: a schedule that is due but taken by another scheduler must not spin.
MIN_SLEEP_SECONDS = 0.01
#: The sleep after a round that left a due schedule unmoved (an error): retry, but not hot.
STUCK_SLEEP_SECONDS = 1.0


class ScheduleStarter(Protocol):
    """Starts the execution of one fire (the service): as the schedule's owner, with the fire
    recorded in the same transaction; then cancels ``cancel`` (overlap ``cancel_previous``)."""

    async def fire_schedule(
        self, schedule: Schedule, fire: NewFire, *, cancel: Sequence[str] = ()
    ) -> str: ...


class Scheduler:
    """Fires due schedules; run it beside the worker (``opsgate serve``) or alone."""

    def __init__(
        self,
        store: SQLStore,
        starter: ScheduleStarter,
        *,
        clock: Clock = utc_now,
        recheck_seconds: float = 10.0,
        batch: int = 100,
        concurrency: int = 8,
    ) -> None:
        self.store = store
        self.starter = starter
        self.clock = clock
        self.recheck_seconds = recheck_seconds
        self.batch = batch
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._woken = anyio.Event()
        self._stuck = False

    def wake(self) -> None:
        """Schedules changed (created, updated, paused, resumed, deleted): look again now."""
        self._woken.set()

    async def run(self) -> None:
        """Fire schedules until cancelled."""
        while True:
            self._woken = anyio.Event()
            try:
                await self.run_due()
                delay = await self._delay()
                if self._stuck:
                    delay = max(delay, STUCK_SLEEP_SECONDS)
            except StoreError:
                logger.exception("the scheduler cannot use the database; trying again")
                delay = self.recheck_seconds
            with anyio.move_on_after(delay):
                await self._woken.wait()

    async def run_due(self) -> int:
        """Handle every schedule due now, in rounds of ``batch``; returns how many were due.

        A schedule that is still due at the same fire time after its turn (it could not be
        moved on) waits for the next wake-up instead of being tried again at once.
        """
        tried: set[tuple[str, datetime | None]] = set()
        while True:
            found = await self._call(self.store.due_schedules, self.clock(), limit=self.batch)
            due = [s for s in found if (s.id, s.next_fire_at) not in tried]
            if not due:
                self._stuck = bool(found)
                return len(tried)
            async with anyio.create_task_group() as group:
                for schedule in due:
                    group.start_soon(self._handle_limited, schedule)
            tried.update((s.id, s.next_fire_at) for s in due)

    async def _delay(self) -> float:
        """Seconds until the earliest next fire, at most ``recheck_seconds``."""
        next_at = await self._call(self.store.next_schedule_fire_at)
        if next_at is None:
            return self.recheck_seconds
        seconds = (next_at - self.clock()).total_seconds()
        return min(self.recheck_seconds, max(seconds, MIN_SLEEP_SECONDS))

    async def _handle_limited(self, schedule: Schedule) -> None:
        """Handle one schedule; an error stays with it (logged), never with the others."""
        async with self._limiter:
            try:
                await self.handle(schedule)
            except StoreError as exc:
                logger.warning("schedule %s: the database failed (%s); retrying", schedule.id, exc)
            except Exception:
                logger.exception("schedule %s could not be handled; retrying", schedule.id)

    async def handle(self, schedule: Schedule) -> None:
        """Record the fires of one due schedule, in order, until done or another scheduler (or
        a change) got there first."""
        try:
            cron = parse_cron(schedule.cron, schedule.timezone)
        except CronError as exc:
            # Stored schedules were valid; a tz database without the zone makes them unusable.
            step = FireStep(schedule.next_fire_at or self.clock(), False, None)
            await self._record_quietly(schedule, step, FireOutcome.FAILED, {"error": str(exc)})
            return
        for step in plan_due(schedule, cron, self.clock()):
            try:
                if step.run:
                    await self._fire(schedule, step)
                else:
                    await self._record(schedule, step, FireOutcome.MISFIRED)
            except ConflictError:
                return  # another scheduler, or a change: the next round reads it again

    async def _fire(self, schedule: Schedule, step: FireStep) -> None:
        """Apply the overlap policy, then start the execution (or record why not)."""
        policy = schedule.overlap_policy
        active = await self._call(self.store.active_schedule_executions, schedule.id)
        if active and policy is OverlapPolicy.SKIP:
            data = {"reason": "the previous execution is still active", "active": _ids(active)}
            await self._record(schedule, step, FireOutcome.SKIPPED, data)
            return
        fire = NewFire(
            schedule_id=schedule.id,
            fire_at=step.fire_at,
            next_fire_at=step.next_at,
            queue=policy in (OverlapPolicy.QUEUE, OverlapPolicy.CANCEL_PREVIOUS),
            data=step.data,
        )
        cancel = _ids(active) if policy is OverlapPolicy.CANCEL_PREVIOUS else []
        try:
            await self.starter.fire_schedule(schedule, fire, cancel=cancel)
        except (ConflictError, StoreError):
            raise
        except PolicyDeniedError as exc:
            await self._record(schedule, step, FireOutcome.DENIED, {"reason": str(exc)})
        except OpsgateError as exc:
            await self._record(schedule, step, FireOutcome.FAILED, {"error": str(exc)})
        except Exception as exc:
            logger.exception("schedule %s could not start its fire at %s", schedule.id, step)
            await self._record(schedule, step, FireOutcome.FAILED, {"error": repr(exc)})

    async def _record(
        self,
        schedule: Schedule,
        step: FireStep,
        outcome: FireOutcome,
        data: dict[str, Any] | None = None,
    ) -> None:
        await self._call(
            self.store.record_fire,
            schedule.id,
            step.fire_at,
            outcome,
            next_fire_at=step.next_at,
            data={**step.data, **(data or {})},
        )

    async def _record_quietly(
        self, schedule: Schedule, step: FireStep, outcome: FireOutcome, data: dict[str, Any]
    ) -> None:
        try:
            await self._record(schedule, step, outcome, data)
        except ConflictError:
            pass

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))


def _ids(executions: Sequence[Execution]) -> list[str]:
    return [execution.id for execution in executions]

"""Retry decisions: exponential backoff with a cap and jitter, and which errors deserve a retry.

Pure functions: the random draw and the clock come from the caller, so rehearsals and tests can
compute the exact delays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from opsgate.spec.model import RetrySpec


@dataclass(frozen=True, slots=True)
class Failure:
    """What an attempt's error says about retrying: its type name and the action's verdict."""

    message: str
    error_type: str
    retryable: bool
    timed_out: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "message": self.message,
            "type": self.error_type,
            "retryable": self.retryable,
            "timed_out": self.timed_out,
        }


def backoff_delay(retry: RetrySpec, attempt: int, draw: float) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1-based); ``draw`` is uniform in [0, 1).

    ``initial * coefficient^(attempt-1)``, capped at ``max_interval``, then reduced by up to
    ``jitter`` of itself (full jitter when ``jitter`` is 1).
    """
    base = retry.initial_interval.total_seconds() * float(retry.backoff_coefficient) ** (
        attempt - 1
    )
    capped = min(base, retry.max_interval.total_seconds())
    return timedelta(seconds=capped * (1.0 - float(retry.jitter) * draw))


def deserves_retry(retry: RetrySpec, attempt: int, failure: Failure) -> bool:
    """Whether another attempt follows: attempts left, a retryable error, allowed by type."""
    if attempt >= retry.max_attempts or not failure.retryable:
        return False
    if failure.error_type in retry.non_retryable:
        return False
    return not retry.retry_on or failure.error_type in retry.retry_on


def next_attempt_at(
    retry: RetrySpec, attempt: int, failure: Failure, now: datetime, draw: float
) -> datetime | None:
    """When the next attempt is due, or ``None`` when the failure is final."""
    if not deserves_retry(retry, attempt, failure):
        return None
    return now + backoff_delay(retry, attempt, draw)

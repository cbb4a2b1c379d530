"""Backoff delays and retry decisions, exactly (the random draw is an argument)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsgate.engine.retry import Failure, backoff_delay, deserves_retry, next_attempt_at
from opsgate.spec.model import RetrySpec

RETRYABLE = Failure("refused", "ConnectionError", retryable=True)


def spec(**fields: object) -> RetrySpec:
    return RetrySpec.model_validate(
        {"max_attempts": 5, "initial_interval": "1s", "max_interval": "10s", **fields}
    )


@pytest.mark.parametrize(("attempt", "seconds"), [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)])
def test_exact_waits_double_and_stop_at_the_cap(attempt: int, seconds: float) -> None:
    assert backoff_delay(spec(jitter=0), attempt, draw=0.7) == timedelta(seconds=seconds)


def test_full_jitter_draws_between_zero_and_the_capped_wait() -> None:
    retry = spec()  # jitter defaults to 1: full jitter
    assert backoff_delay(retry, 3, draw=0.0) == timedelta(seconds=4)
    assert backoff_delay(retry, 3, draw=0.5) == timedelta(seconds=2)
    assert backoff_delay(retry, 3, draw=0.999) < timedelta(seconds=0.01)


def test_partial_jitter_keeps_part_of_the_wait() -> None:
    assert backoff_delay(spec(jitter=0.25), 2, draw=1.0) == timedelta(seconds=1.5)


def test_only_retryable_errors_with_attempts_left_are_retried() -> None:
    retry = spec(max_attempts=3)
    assert deserves_retry(retry, 1, RETRYABLE)
    assert deserves_retry(retry, 2, RETRYABLE)
    assert not deserves_retry(retry, 3, RETRYABLE)
    assert not deserves_retry(retry, 1, Failure("exit 2", "ExitCode", retryable=False))


def test_retry_on_and_non_retryable_narrow_by_type() -> None:
    assert not deserves_retry(spec(retry_on=["Timeout"]), 1, RETRYABLE)
    assert deserves_retry(spec(retry_on=["ConnectionError"]), 1, RETRYABLE)
    assert not deserves_retry(spec(non_retryable=["ConnectionError"]), 1, RETRYABLE)
    both = spec(retry_on=["ConnectionError"], non_retryable=["ConnectionError"])
    assert not deserves_retry(both, 1, RETRYABLE)


def test_next_attempt_is_due_after_the_wait_or_never() -> None:
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    retry = spec(jitter=0, max_attempts=2)
    assert next_attempt_at(retry, 1, RETRYABLE, now, 0.3) == now + timedelta(seconds=1)
    assert next_attempt_at(retry, 2, RETRYABLE, now, 0.3) is None

"""Concurrency locks: the keys an execution must hold before it starts (its blueprint's, and
the place a policy's ``max_concurrent`` gives it among the executions of its blueprint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opsgate.expressions import render
from opsgate.spec.model import WorkflowSpec


def lock_keys(spec: WorkflowSpec, params: Mapping[str, Any]) -> list[str]:
    """The rendered ``concurrency.locks``; one lock named after the blueprint when none is set."""
    if spec.concurrency is None:
        return []
    variables = {"params": dict(params), "data": spec.data}
    keys = [str(render(key, variables)) for key in spec.concurrency.locks]
    return keys or [f"workflow:{spec.name}"]


def policy_lock_key(workflow: str) -> str:
    """The lock whose places a policy's ``limits.max_concurrent`` counts for ``workflow``."""
    return f"policy:max_concurrent:{workflow}"

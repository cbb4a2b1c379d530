"""The variables templates and conditions see while an execution runs.

``params``, ``data``, ``steps.<id>.outputs`` / ``steps.<id>.status``, ``execution``,
``targets``, ``now``, and inside a fan-out run ``item`` and ``target``; ``result`` inside a
step's ``outputs``.
Outputs of a fan-out step are lists, one value per run in item order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from opsgate.expressions import render_value
from opsgate.spec.model import StepSpec


def execution_variables(
    *,
    execution_id: str,
    workflow_name: str,
    requested_by: str,
    params: Mapping[str, Any],
    data: Mapping[str, Any],
    steps: Mapping[str, Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    now: datetime,
    approvals: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables shared by every template of one execution at one moment."""
    return {
        "approvals": dict(approvals or {}),
        "params": dict(params),
        "data": dict(data),
        "steps": {step_id: dict(view) for step_id, view in steps.items()},
        "execution": {"id": execution_id, "workflow": workflow_name, "requested_by": requested_by},
        "targets": [dict(target) for target in targets],
        "now": now,
    }


def run_variables(
    shared: Mapping[str, Any], *, item: Any = None, target: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``shared`` plus the fan-out item and target of one run."""
    variables = dict(shared)
    if item is not None:
        variables["item"] = item
    if target is not None:
        variables["target"] = dict(target)
    return variables


def step_outputs(step: StepSpec, result: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
    """A run's published outputs: its ``outputs`` templates over ``result``, or the result."""
    if not step.outputs:
        return dict(result)
    return render_value(dict(step.outputs), {**variables, "result": dict(result)})


def aggregate_outputs(per_run: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Fan-out outputs: each name maps to the list of the runs' values, in item order."""
    names: list[str] = []
    for outputs in per_run:
        names += [name for name in outputs if name not in names]
    return {name: [outputs.get(name) for outputs in per_run] for name in names}

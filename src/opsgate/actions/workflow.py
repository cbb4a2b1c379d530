"""The ``workflow`` action: start another blueprint as a child execution."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool

from opsgate.actions.base import ActionArguments
from opsgate.spec.model import Label


class WorkflowArguments(ActionArguments):
    """Arguments of ``workflow``: which blueprint to run, with which parameters."""

    workflow_name: Label = Field(description="the name of the blueprint to run")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="its parameters (templated); checked when it starts"
    )
    wait: StrictBool = Field(
        default=True,
        description="wait for the child execution to finish and fail if it fails; false only "
        "starts it and outputs its execution_id",
    )

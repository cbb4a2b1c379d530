"""The ``workflow`` action: start another blueprint as a child execution."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import Field, StrictBool

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.errors import OpsgateError, StepError
from opsgate.secrets import as_references
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


#: How often a waiting ``workflow`` step looks at its child.
POLL_SECONDS = 0.5


class WorkflowAction(Action[WorkflowArguments]):
    """``workflow``: start another blueprint as a child execution and (by default) wait for it.

    The child is started as the parent's requester, so the policies judge it as they would
    judge that principal; its gates are its own. Starting is idempotent per attempt: a repeated
    start of the same attempt finds the same child. The step's outcome is the child's: it
    succeeds with ``execution_id``, ``status`` and the child's step ``outputs``, and fails (not
    retryable: the child had its own retries) when the child ends otherwise. Cancelling the
    step (a cancel, a timeout) cancels the child, which rolls back what it completed.
    """

    name = "workflow"
    arguments = WorkflowArguments
    changes_things = True
    description = "run another blueprint as a child execution"

    async def run(self, args: WorkflowArguments, ctx: StepContext) -> dict[str, Any]:
        children = ctx.children
        if children is None:
            raise StepError(
                "this worker has no service to start child executions with; run the step "
                "under opsgate serve, opsgate worker or opsgate run",
                retryable=False,
            )
        key = f"child:{ctx.execution_id}:{ctx.step_id}:{ctx.item_key}:{ctx.attempt}"
        parameters = as_references(args.parameters)  # a child takes references, not tokens
        try:
            child = await children.start(args.workflow_name, parameters, key)
        except OpsgateError as exc:
            raise StepError(f"cannot start {args.workflow_name}: {exc}", retryable=False) from exc
        await ctx.report(f"started child execution {child} ({args.workflow_name})")
        if not args.wait:
            return {"execution_id": child}
        try:
            found = await children.status(child)
            while not found.finished:
                await ctx.sleep(POLL_SECONDS)
                found = await children.status(child)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                reason = f"its parent step {ctx.step_id} of {ctx.execution_id} was cancelled"
                await children.cancel(child, reason)
            raise
        if found.status != "succeeded":
            message = (found.error or {}).get("message", found.status)
            raise StepError(
                f"child execution {child} ({args.workflow_name}) ended {found.status}: {message}",
                retryable=False,
            )
        return {"execution_id": child, "status": found.status, "outputs": dict(found.outputs)}

"""The whole exception tree of opsgate.

Messages are written for the reader who has to act on them, often an LLM: what failed,
which identifier, and what to do next. Constructors take identifiers and build the message.

    OpsgateError
     ├── ConfigurationError         settings or a referenced file are unusable
     ├── NotFoundError              an unknown blueprint, execution, approval, schedule, ...
     ├── InvalidSpecError           a blueprint, policy, roles or inventory file has errors
     │    ├── InvalidBlueprintError
     │    └── InvalidPolicyError
     ├── InvalidParametersError     the values given for a run do not fit the blueprint
     ├── InvalidTransitionError     a status change that the transition table refuses
     ├── ConflictError              a compare-and-set lost, or an idempotency key reused
     ├── StoreError                 the database failed or is not migrated
     └── StepError                  an action failed; ``retryable`` says whether to retry
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsgate.spec.issues import Issue
    from opsgate.spec.parameters import ParameterProblem


class OpsgateError(Exception):
    """Root of every error opsgate raises on purpose."""


class ConfigurationError(OpsgateError):
    """A setting, or a file it names, cannot be used."""


class NotFoundError(OpsgateError):
    """An identifier names nothing; the message suggests close matches when there are any."""

    def __init__(self, kind: str, name: str, known: Iterable[str] = ()) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(known), n=3)
        message = f"{kind} {name!r} not found"
        if self.suggestions:
            message += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        super().__init__(message)


class InvalidSpecError(OpsgateError):
    """A document failed validation; ``issues`` holds every problem found, not just the first."""

    def __init__(self, subject: str, issues: Sequence[Issue]) -> None:
        self.subject = subject
        self.issues = list(issues)
        errors = [i for i in self.issues if i.is_error]
        lines = [f"{subject} is invalid ({len(errors)} error(s)):"]
        lines += [f"  {issue}" for issue in errors]
        super().__init__("\n".join(lines))


class InvalidBlueprintError(InvalidSpecError):
    """A blueprint file has errors."""


class InvalidPolicyError(InvalidSpecError):
    """A policy or roles file has errors."""


class InvalidParametersError(OpsgateError):
    """The parameters of a run do not fit the blueprint; every problem is listed."""

    def __init__(self, workflow_name: str, problems: Sequence[ParameterProblem]) -> None:
        self.workflow_name = workflow_name
        self.problems = list(problems)
        lines = [f"invalid parameters for workflow {workflow_name!r}:"]
        for problem in self.problems:
            line = f"  {problem.path}: {problem.message}"
            if problem.hint:
                line += f" (hint: {problem.hint})"
            lines.append(line)
        lines.append("Call get_workflow_details to see the parameters it takes.")
        super().__init__("\n".join(lines))


class InvalidTransitionError(OpsgateError):
    """The transition table does not allow this status change from the current status."""

    def __init__(self, entity: str, entity_id: str, current: str, attempted: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.current = current
        self.attempted = attempted
        super().__init__(f"cannot {attempted} {entity} {entity_id}: it is {current}")


class ConflictError(OpsgateError):
    """Someone else changed the record first (a lost compare-and-set) or a key was reused."""


class StoreError(OpsgateError):
    """The database could not be used; the message says how to fix the set-up."""


class StepError(OpsgateError):
    """An action failed. ``retryable`` is decided once, at the action boundary."""

    def __init__(self, message: str, *, retryable: bool, error_type: str | None = None) -> None:
        self.retryable = retryable
        self.error_type = error_type or type(self).__name__
        super().__init__(message)


class PolicyDeniedError(OpsgateError):
    """Policies refuse the request; the message names each rule, its reason and the remedy."""


class ApprovalRefusedError(OpsgateError):
    """A principal may not decide this approval (self-approval, missing role, wrong state)."""


class StalePlanError(OpsgateError):
    """The plan that would run differs from the plan the caller reviewed (``plan_digest``)."""

"""The typed blueprint: what a valid blueprint file becomes (``WorkflowSpec`` and its parts).

Every model forbids unknown fields and is frozen: a spec is a value, hashed and snapshotted when
an execution starts. Scalars are strict (``"3"`` is not an integer, ``1`` is not ``true``) because
YAML already types them and a quoted number is more often a mistake than an intent. Cross-field
and cross-reference rules (dependencies, templates, gates, defaults) are checked by
:mod:`opsgate.spec.inspect` on the raw document, so that one broken field does not hide them.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StrictBool,
    field_validator,
)

from opsgate.spec.durations import DURATION_HINT, format_duration, parse_duration
from opsgate.spec.structure import describe, invalid

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _duration(value: object) -> timedelta:
    try:
        parsed = parse_duration(value)
    except (ValueError, OverflowError):
        raise invalid(f"is not a duration: {describe(value)}", DURATION_HINT) from None
    if parsed <= timedelta(0):
        raise invalid("must be longer than zero", DURATION_HINT)
    return parsed


def _identifier(value: str) -> str:
    if _IDENTIFIER.match(value) is None:
        raise invalid(
            f"must be an identifier, not {describe(value)}",
            "use letters, digits and underscores, starting with a letter or underscore "
            "(templates read it as steps.<id> or params.<name>)",
        )
    return value


def _name(value: str) -> str:
    if _NAME.match(value) is None:
        raise invalid(
            f"must be a blueprint name, not {describe(value)}",
            "use up to 100 letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return value


def _number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"must be a number, not {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"must be a finite number, not {describe(value)}")
    return value


def _int_or_template(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise invalid(f"must be at least 1, not {describe(value)}")
        return value
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return value
    raise invalid(
        f"must be an integer or a template, not {describe(value)}",
        "write a number such as 2, or a template such as '{{ params.batch_size }}'",
    )


def _text_or_list(value: object) -> object:
    if value is None or isinstance(value, str | list | tuple):
        return value
    raise invalid(f"must be text or a list, not {describe(value)}")


def _condition(value: object) -> object:
    if value is None or isinstance(value, str | bool):
        return value
    raise invalid(
        f"must be a condition (an expression such as \"params.env == 'prod'\"), "
        f"not {describe(value)}"
    )


class Expression:
    """Marks a text field as a bare expression (like ``when:``), not a ``{{ }}`` template."""

    def __repr__(self) -> str:
        return "Expression()"


#: Text, never a number or a boolean coerced to text.
Text = Annotated[str, Strict()]
#: Non-empty text.
Label = Annotated[str, Strict(), Field(min_length=1)]
#: An integer, never a float or a boolean.
Integer = Annotated[int, Strict()]
#: An integer or a finite float, never a boolean; integers stay integers.
Number = Annotated[int | float, BeforeValidator(_number)]
#: A duration written with a unit (``500ms``, ``30s``, ``2m``, ``4h``, ``1d``), longer than zero.
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
#: A name usable in templates: ``steps.<id>``, ``params.<name>``, ``outputs.<name>``.
Identifier = Annotated[str, Strict(), AfterValidator(_identifier)]
#: A condition: a bare expression such as ``params.env == 'prod'``, or a literal boolean.
Condition = Annotated[str | bool, BeforeValidator(_condition), Expression()]
#: A template string (``{{ ... }}`` resolved at run time) or any text.
Template = Annotated[str, Strict()]

Risk = Literal["low", "medium", "high", "critical"]
ParameterType = Literal["string", "integer", "number", "boolean", "array", "object"]


class SpecModel(BaseModel):
    """Base of every blueprint model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueSchema(SpecModel):
    """The shape of one value: a small, JSON-schema-like declaration."""

    type: ParameterType = Field(
        description="the value's type: string, integer, number, boolean, array or object"
    )
    description: Text | None = Field(
        default=None, description="what the value means, shown to callers and approvers"
    )
    min: Number | None = Field(default=None, description="smallest allowed integer or number")
    max: Number | None = Field(default=None, description="largest allowed integer or number")
    min_length: Integer | None = Field(
        default=None, ge=0, description="fewest characters (string) or items (array)"
    )
    max_length: Integer | None = Field(
        default=None, ge=0, description="most characters (string) or items (array)"
    )
    pattern: Text | None = Field(
        default=None,
        description="regular expression a string must match (searched, so anchor it with ^...$)",
    )
    enum: tuple[Any, ...] | None = Field(
        default=None, min_length=1, description="the only allowed values"
    )
    items: ValueSchema | None = Field(
        default=None, description="the shape of each item of an array"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                raise invalid(
                    f"is not a valid regular expression: {exc}",
                    "write a Python regular expression; escape special characters with \\",
                ) from None
        return pattern


class FieldSpec(ValueSchema):
    """A named input: a value schema that may be required or have a default."""

    required: StrictBool = Field(
        default=False, description="the caller must give a value (a default makes this moot)"
    )
    default: Any = Field(
        default=None, description="the value used when none is given; null means no default"
    )


class ParameterSpec(FieldSpec):
    """A blueprint parameter: an input the caller gives when planning or executing."""

    secret: StrictBool = Field(
        default=False,
        description="the value is a secret reference (env:NAME or file:/path), resolved only "
        "inside the action and never stored or shown",
    )


class RetrySpec(SpecModel):
    """How often and how fast a failed attempt is retried (Temporal-style backoff)."""

    max_attempts: Integer = Field(
        default=1, ge=1, le=100, description="attempts in total, the first included; 1 = no retry"
    )
    initial_interval: Duration = Field(
        default=timedelta(seconds=1), description="wait before the second attempt"
    )
    backoff_coefficient: Number = Field(
        default=2.0, ge=1, le=100, description="each wait is the previous one times this"
    )
    max_interval: Duration = Field(
        default=timedelta(minutes=5), description="the longest wait between attempts"
    )
    jitter: Number = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of each wait that is random: the wait is drawn from "
        "[wait * (1 - jitter), wait]; 1 = full jitter, so that retries of many steps do not hit "
        "a host at once; 0 = exact waits",
    )
    retry_on: tuple[Label, ...] = Field(
        default=(),
        description="error types worth a retry; empty = every error the action calls retryable",
    )
    non_retryable: tuple[Label, ...] = Field(
        default=(), description="error types never retried, even if listed in retry_on"
    )


class ApproversSpec(SpecModel):
    """Who may decide a gate: anyone holding one of ``roles``, or one of ``principals``."""

    roles: tuple[Label, ...] = Field(default=(), description="roles whose holders may decide")
    principals: tuple[Label, ...] = Field(
        default=(), description="principals (users or services) who may decide"
    )


class ApprovalSpec(SpecModel):
    """A gate: the step waits until enough authorised principals approve it."""

    approvers: ApproversSpec = Field(description="who may approve or reject")
    quorum: Integer = Field(
        default=1, ge=1, description="distinct approvals needed; one rejection rejects"
    )
    allow_self_approval: StrictBool = Field(
        default=False,
        description="the requester of the execution may approve this gate themselves "
        "(separation of duties is the default; a policy may also allow it)",
    )
    timeout: Duration = Field(
        default=timedelta(hours=24), description="how long the gate waits for a decision"
    )
    on_timeout: Literal["reject", "escalate"] = Field(
        default="reject",
        description="at the deadline: reject (fail closed) or escalate to escalate_to; never "
        "approve",
    )
    escalate_to: ApproversSpec | None = Field(
        default=None, description="who decides after an escalation (on_timeout: escalate)"
    )
    escalation_timeout: Duration | None = Field(
        default=None,
        description="how long the escalated gate waits before it rejects; default: timeout",
    )
    message: Template | None = Field(
        default=None, description="what approvers are asked (a template)"
    )
    response: dict[Identifier, FieldSpec] = Field(
        default_factory=dict,
        description="fields the approver fills in when deciding, e.g. a ticket number",
    )
    confirm: StrictBool = Field(
        default=False,
        description="the human at the requesting client confirms the step before it runs "
        "(asked through the chat client); a confirmation, not a separation-of-duties approval",
    )


class CompensationSpec(SpecModel):
    """An action that undoes a completed step; it runs with its own retry and timeout."""

    name: Text | None = Field(default=None, description="human-readable label")
    action: Label = Field(description="the step type to run, e.g. ssh, http, log")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="the action's arguments (templated)"
    )
    retry: RetrySpec = Field(
        default_factory=lambda: RetrySpec(max_attempts=3),
        description="retries of the compensation (default: 3 attempts, since a failed undo "
        "leaves the system half-changed)",
    )
    timeout: Duration | None = Field(default=None, description="limit for one attempt")


class RollbackActionSpec(CompensationSpec):
    """A workflow-level cleanup action of the rollback plan."""

    id: Identifier = Field(description="unique name of this action within the rollback plan")


class RollbackPlanSpec(SpecModel):
    """Workflow-level actions around the per-step compensations."""

    on_failure: tuple[RollbackActionSpec, ...] = Field(
        default=(),
        description="run in order after the compensations when the execution fails, is "
        "rejected, expires or is cancelled with cleanup",
    )
    finally_: tuple[RollbackActionSpec, ...] = Field(
        default=(),
        alias="finally",
        description="run in order at the very end of every execution, whatever its outcome",
    )


class ConcurrencySpec(SpecModel):
    """Keyed locks that keep executions from working on the same thing at once."""

    locks: tuple[Label, ...] = Field(
        default=(),
        description="lock keys (templates, e.g. 'service:{{ params.service }}'); none = one "
        "lock named after the blueprint",
    )
    max_concurrent: Integer = Field(
        default=1, ge=1, description="executions that may hold the same lock key at once"
    )
    on_conflict: Literal["queue", "reject"] = Field(
        default="queue",
        description="when a lock is taken: queue the execution until it is free, or reject it",
    )


class StepSpec(SpecModel):
    """One node of the blueprint's DAG."""

    id: Identifier = Field(description="unique step id, used in depends_on and steps.<id>")
    name: Text | None = Field(default=None, description="human-readable label; default: the id")
    description: Text | None = Field(default=None, description="what the step does and why")
    action: Label = Field(description="the step type to run, e.g. ssh, http, wait, log")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="the action's arguments (templated)"
    )
    depends_on: tuple[Label, ...] = Field(
        default=(), description="ids of the steps that must complete (or be skipped) first"
    )
    when: Condition | None = Field(
        default=None,
        description="a condition evaluated once before the step (before its gate); false skips "
        "the step, and a skipped step counts as completed for its dependents",
    )
    for_each: Annotated[str | tuple[Any, ...] | None, BeforeValidator(_text_or_list)] = Field(
        default=None,
        description="fan out: 'targets' (one run per target), a list, or a template giving a list",
    )
    max_parallel: Annotated[int | str | None, BeforeValidator(_int_or_template)] = Field(
        default=None, description="runs of a fan-out at once (integer or template); default: all"
    )
    continue_on_error: StrictBool = Field(
        default=False,
        description="a failure of this step (after its retries) does not fail the execution",
    )
    max_failed_percentage: Number | None = Field(
        default=None,
        ge=0,
        le=100,
        description="share of fan-out runs that may fail without failing the step; default 0",
    )
    retry: RetrySpec = Field(default_factory=RetrySpec, description="retries of a failed attempt")
    timeout: Duration | None = Field(default=None, description="limit for one attempt")
    idempotent: StrictBool = Field(
        default=False,
        description="safe to run again: a step interrupted by a crash is retried instead of "
        "failing the execution",
    )
    approval: ApprovalSpec | None = Field(
        default=None, description="a gate the step waits at before it runs"
    )
    rollback: CompensationSpec | None = Field(
        default=None, description="the compensation that undoes this step"
    )
    outputs: dict[Identifier, Template] = Field(
        default_factory=dict,
        description="named values the step publishes, as templates over its result",
    )


class WorkflowSpec(SpecModel):
    """A parsed, validated blueprint."""

    name: Annotated[str, Strict(), AfterValidator(_name)] = Field(
        description="the blueprint's name, used by list_workflows and execute_workflow"
    )
    version: Label = Field(description='the blueprint\'s version, quoted text such as "1.2.0"')
    title: Text | None = Field(default=None, description="a human-readable title")
    description: Text | None = Field(default=None, description="what the blueprint does")
    category: Text | None = Field(default=None, description="a grouping such as maintenance")
    risk: Risk = Field(
        default="medium",
        description="low, medium, high or critical; policies and approvals key on it",
    )
    tags: tuple[Text, ...] = Field(default=(), description="free labels for search")
    owner: Text | None = Field(default=None, description="the team or person responsible")
    documentation: Text | None = Field(default=None, description="longer notes for operators")
    estimated_duration: Duration | None = Field(
        default=None, description="how long a run usually takes, shown when planning"
    )
    parameters: dict[Identifier, ParameterSpec] = Field(
        default_factory=dict, description="inputs given by the caller, by name"
    )
    targets: Annotated[str | tuple[Text, ...] | None, BeforeValidator(_text_or_list)] = Field(
        default=None,
        description="the hosts to work on: an inventory selector (templated) or a list of them",
    )
    data: dict[Identifier, Any] = Field(
        default_factory=dict,
        description="data documents beside the blueprint, by name: {name: relative/path.yaml}; "
        "their content is read in templates as data.<name>",
    )
    steps: tuple[StepSpec, ...] = Field(min_length=1, description="the steps of the DAG")
    rollback_plan: RollbackPlanSpec = Field(
        default_factory=RollbackPlanSpec, description="workflow-level cleanup actions"
    )
    rollback_on_failure: StrictBool = Field(
        default=True,
        description="on failure, run the compensations of completed steps and the rollback plan",
    )
    timeout: Duration | None = Field(
        default=None, description="limit for the whole execution, approvals included"
    )
    concurrency: ConcurrencySpec | None = Field(
        default=None, description="locks held while the execution runs"
    )

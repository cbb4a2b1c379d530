"""The action interface, the context an action runs in, and the boundary that classifies errors.

An :class:`Action` performs one step type. It receives its validated arguments and a
:class:`StepContext` (ids, target, item, the variables conditions read, progress reporting, an
injectable clock and sleep, a logger) and returns its outputs, or raises. Actions know nothing
about storage: the worker records what they return or raise.

The worker calls every action through :func:`run_action`, the one place where arguments are
validated and errors are classified, once::

    run_action(action, raw_arguments, ctx)
     ├─ arguments do not fit action.arguments ────── StepError InvalidArguments  not retryable
     └─ action.run(arguments, ctx)
         ├─ returns a JSON-serialisable mapping ──── the outputs (as JSON reads them)
         ├─ returns anything else ────────────────── StepError InvalidOutputs    not retryable
         ├─ raises StepError ─────────────────────── itself: the action classified it
         ├─ raises TimeoutError ──────────────────── StepError Timeout           retryable
         ├─ raises FileNotFoundError,
         │   FileExistsError, IsADirectoryError,
         │   NotADirectoryError, PermissionError,
         │   ssl.SSLCertVerificationError ────────── StepError <class name>      not retryable
         ├─ raises ConnectionError, other OSError ── StepError ConnectionError   retryable
         ├─ raises ExpressionError ───────────────── StepError ExpressionError   not retryable
         ├─ raises an ExceptionGroup of one ──────── as that one exception
         ├─ raises any other Exception ───────────── StepError <class name>      not retryable
         └─ is cancelled ─────────────────────────── re-raised untouched

Translated errors read ``"<Class>: <text>"`` (an ``ExpressionError`` keeps its own text) and
chain the original (``raise ... from exc``).

Secrets: for an action with ``uses_secrets``, the secret parameters' tokens in the arguments are
replaced by their values here (:func:`opsgate.secrets.reveal`), and every value the attempt
resolved (those, and the credentials the action reads with :meth:`StepContext.secret`) is
masked as ``***`` in the outputs and in the error message before they leave this boundary.
Cancellation (``anyio.get_cancelled_exc_class()``) is never swallowed or translated: the step's
timeout and the cancellation of an execution are decided by the worker's cancel scopes, outside.
Third-party errors (asyncssh, httpx, pyghmi) are translated in their own action, where their
meaning is known; this table is the safety net for everything else.
"""

from __future__ import annotations

import json
import logging
import shlex
import ssl
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import anyio
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict

from opsgate.actions.connections import Connections
from opsgate.actions.output import DEFAULT_OUTPUT_LIMIT, OutputCapture
from opsgate.errors import StepError
from opsgate.expressions import ENVIRONMENT, ExpressionError, evaluate, is_template, render_value
from opsgate.secrets import Redactor, Secrets, has_token, reveal
from opsgate.spec.source import Document
from opsgate.spec.structure import validate_model

#: ``OSError`` subclasses that a retry does not fix: the local system or a certificate is wrong.
_PERMANENT_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ssl.SSLCertVerificationError,
)


class ActionArguments(BaseModel):
    """Base of the argument models: unknown arguments are errors, arguments are immutable.

    Arguments arrive from a step's ``with:`` after template rendering, so each model validates
    the final values; the blueprint validator applies the same model before any run and skips
    values that are still templates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


ArgsT = TypeVar("ArgsT", bound=ActionArguments)


async def _ignore_sub_task(sub_task: str) -> None:
    """The default reporter: progress goes nowhere."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """Where a child execution stands, as the ``workflow`` action sees it."""

    status: str
    finished: bool
    error: Mapping[str, Any] | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)


class Children(Protocol):
    """Starts, follows and cancels child executions; the runtime provides it to the worker."""

    async def start(self, workflow_name: str, parameters: Mapping[str, Any], key: str) -> str:
        """Start (or, for the same ``key``, find again) a child execution; its id."""

    async def status(self, execution_id: str) -> ChildStatus: ...

    async def cancel(self, execution_id: str, reason: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """What an action knows about the attempt it performs, and the services it may use.

    The worker builds one per attempt. Tests inject ``clock`` and ``sleep`` so that nothing
    waits for real time, and ``reporter`` to see the sub-tasks an action reports.
    """

    #: The execution this attempt belongs to.
    execution_id: str
    #: The step's id in the blueprint.
    step_id: str
    #: Which attempt this is, counting from 1.
    attempt: int
    #: The fan-out item's key; ``""`` for a step without ``for_each``.
    item_key: str = ""
    #: The inventory target (address, labels, ...) of a ``for_each: targets`` run, else ``None``.
    target: Mapping[str, Any] | None = None
    #: The current fan-out item, else ``None``.
    item: Any = None
    #: The names conditions read: params, steps, target, item, execution, approvals
    #: (see ``docs/blueprints.md``); :meth:`evaluate` adds a fresh ``now``.
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: Receives each sub-task an action reports; the worker turns it into an event and the
    #: execution's ``current_sub_task``.
    reporter: Callable[[str], Awaitable[None]] = _ignore_sub_task
    #: The current time, aware UTC.
    clock: Callable[[], datetime] = _utc_now
    #: Sleeps for a number of seconds; a checkpoint where the attempt can be cancelled.
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    #: Where an action logs (to stderr; never stdout, the stdio transport's wire).
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("opsgate.actions"))
    #: Resolves secret references; only actions call it, through :meth:`secret`.
    secrets: Secrets = field(default_factory=Secrets)
    #: The secret values this attempt resolved; masked wherever the attempt's text goes.
    redactor: Redactor = field(default_factory=Redactor)
    #: Connections shared by the execution's attempts (one per target); ``None``: the action
    #: opens its own for this attempt and closes it at the end.
    connections: Connections | None = None
    #: Bytes of each output stream an action keeps (head and tail; the size is reported).
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    #: Child executions (the ``workflow`` action); ``None`` where no service is attached.
    children: Children | None = None

    def evaluate(self, expression: str) -> Any:
        """Evaluate a bare expression against :attr:`variables`, with ``now`` read from
        :attr:`clock` at this moment (so a condition polled over time sees time pass).

        Raises :class:`~opsgate.expressions.ExpressionError`, which :func:`run_action`
        reports as a non-retryable ``ExpressionError``.
        """
        return evaluate(expression, {**self.variables, "now": self.clock()})

    async def report(self, sub_task: str) -> None:
        """Say what the action is doing now, e.g. ``"Exporting BIOS settings…"``."""
        await self.reporter(self.redactor.text(sub_task))

    def secret(self, reference: str) -> str:
        """The secret ``reference`` points at, masked from now on in everything the attempt
        shows. Raises a non-retryable ``SecretUnavailable`` step error naming the reference."""
        value = self.secrets.resolve(reference)
        self.redactor.add(value)
        return value

    def capture(self) -> OutputCapture:
        """A collector for one output stream, bounded by :attr:`output_limit`."""
        return OutputCapture(self.output_limit)


class Action(ABC, Generic[ArgsT]):
    """The code behind one step type; implementations are named technology + role
    (``SSHAction``, ``WaitAction``).

    Subclasses set the attributes below on the class (an instance may override them, as
    :class:`~opsgate.actions.scripted.ScriptedAction` does) and implement :meth:`run`.
    An instance is shared by every attempt of every execution: keep per-attempt state local.
    """

    #: The name used in a step's ``action:``.
    name: str
    #: The model a step's ``with:`` must fit; :meth:`run` receives an instance of it.
    arguments: type[ActionArguments]
    #: Whether it may change something outside opsgate (so it deserves a compensation).
    changes_things: bool
    #: One line for listings and error hints.
    description: str
    #: Whether it runs against one inventory target (the step needs ``for_each: targets``).
    needs_target: bool = False
    #: Whether secret parameters in its arguments are revealed to it (others see the token).
    uses_secrets: ClassVar[bool] = False
    #: Arguments rendered as shell command lines: each templated value is shell-quoted.
    quoted_arguments: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    async def run(self, args: ArgsT, ctx: StepContext) -> dict[str, Any]:
        """Perform one attempt and return its outputs (a JSON-serialisable mapping).

        Raise :class:`~opsgate.errors.StepError` for failures the action understands (with
        ``retryable`` set); anything else is classified by :func:`run_action`.
        """


async def run_action(
    action: Action[Any], raw_arguments: Mapping[str, Any], ctx: StepContext
) -> dict[str, Any]:
    """Validate the rendered ``raw_arguments``, run ``action`` once and return its outputs.

    Every failure is a :class:`~opsgate.errors.StepError` (see the table in the module
    docstring); cancellation propagates untouched.
    """
    try:
        if action.uses_secrets:
            raw_arguments = reveal(raw_arguments, ctx.secrets, ctx.redactor)
        arguments = parse_arguments(action, raw_arguments)
        outputs = await action.run(arguments, ctx)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        error = classify_error(exc)
        masked = ctx.redactor.text(str(error))
        if masked == str(error):
            raise error from (exc if error is not exc else exc.__cause__)
        # The original error and its chain show the secret: they stay behind.
        raise StepError(masked, retryable=error.retryable, error_type=error.error_type) from None
    masked_outputs: dict[str, Any] = ctx.redactor.value(_json_outputs(action, outputs))
    return masked_outputs


def render_arguments(
    action: Action[Any], arguments: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, Any]:
    """A step's ``with:`` rendered for ``action``: templates everywhere, and in the action's
    :attr:`~Action.quoted_arguments` every substituted value shell-quoted, so a parameter is
    one word of data whatever it holds (``; rm -rf /``, ``$(id)``, quotes, newlines)."""
    return {
        key: (
            _render_quoted(value, variables)
            if key in action.quoted_arguments and is_template(value)
            else render_value(value, variables)
        )
        for key, value in arguments.items()
    }


def _shell_word(value: Any) -> str:
    text = "" if value is None else str(value)
    if has_token(text):
        raise ExpressionError(
            "a secret parameter cannot be substituted into a command line (it would show in "
            'the process list); pass it through env: and refer to it as "$NAME"'
        )
    return shlex.quote(text)


_QUOTING = ENVIRONMENT.overlay(finalize=_shell_word)


def _render_quoted(template: str, variables: Mapping[str, Any]) -> str:
    try:
        return _QUOTING.from_string(template).render(variables)
    except ExpressionError:
        raise
    except (TemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise ExpressionError(f"template {template!r} failed: {exc}") from exc


def parse_arguments(action: Action[Any], raw_arguments: Mapping[str, Any]) -> ActionArguments:
    """``raw_arguments`` as an instance of ``action.arguments``, or a non-retryable
    ``InvalidArguments`` error naming every field that does not fit and how to fix it."""
    data = dict(raw_arguments)
    arguments, issues = validate_model(action.arguments, data, Document("with", data))
    if arguments is not None:
        return arguments
    problems = []
    for issue in issues:
        notes = [f"at with.{issue.path}"] if issue.path else []
        notes += [f"hint: {issue.hint}"] if issue.hint else []
        problems.append(issue.message + (f" ({'; '.join(notes)})" if notes else ""))
    raise StepError(
        f"action {action.name!r} got invalid arguments: {'; '.join(problems)}. Fix the step's "
        "with: in the blueprint, or the parameters its templates read.",
        retryable=False,
        error_type="InvalidArguments",
    )


def target_section(
    ctx: StepContext, section: str, host_key: str, action: str, example: str
) -> tuple[str, dict[str, Any]]:
    """The step target's name and its inventory ``section`` (``ssh``, ``bmc``) with
    ``host_key`` defaulting to the target's address; a non-retryable error that says what to
    add when the target has no such section."""
    target = ctx.target or {}
    name = str(target.get("name", "?"))
    data = target.get(section)
    if not isinstance(data, Mapping):
        raise StepError(
            f"target {name!r} has no {section} section in the inventory, so {action} cannot "
            f"reach it; add {section}: {example} to it (see docs/inventory.md)",
            retryable=False,
            error_type="TargetUnusable",
        )
    found = dict(data)
    if found.get(host_key) is None:
        found[host_key] = str(target.get("address", name))
    return name, found


def classify_error(exc: Exception) -> StepError:
    """The :class:`~opsgate.errors.StepError` an unexpected exception stands for (see the table
    in the module docstring); a ``StepError`` is returned as it is."""
    if isinstance(exc, StepError):
        return exc
    if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        return classify_error(exc.exceptions[0])
    if isinstance(exc, TimeoutError):
        return StepError(_describe(exc), retryable=True, error_type="Timeout")
    if isinstance(exc, _PERMANENT_OS_ERRORS):
        return StepError(_describe(exc), retryable=False, error_type=type(exc).__name__)
    if isinstance(exc, OSError):
        return StepError(_describe(exc), retryable=True, error_type="ConnectionError")
    if isinstance(exc, ExpressionError):
        return StepError(str(exc), retryable=False, error_type="ExpressionError")
    return StepError(_describe(exc), retryable=False, error_type=type(exc).__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _json_outputs(action: Action[Any], outputs: object) -> dict[str, Any]:
    """``outputs`` as JSON reads them back (tuples become lists), or ``InvalidOutputs``."""
    problem = None
    if not isinstance(outputs, Mapping):
        problem = f"a {type(outputs).__name__}, not a mapping of names to values"
    else:
        try:
            text = json.dumps(dict(outputs), allow_nan=False)
        except (TypeError, ValueError) as exc:
            problem = f"outputs that are not JSON: {exc}"
        else:
            loaded: dict[str, Any] = json.loads(text)
            return loaded
    raise StepError(
        f"action {action.name!r} returned {problem}; this is a bug in the action: "
        "report it to its maintainers",
        retryable=False,
        error_type="InvalidOutputs",
    )

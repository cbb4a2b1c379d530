"""The ``shell`` action: run a command on the opsgate host; the command arguments and output
handling that ``ssh`` shares."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from typing import Annotated, Any, Literal

import anyio
from anyio.abc import ByteReceiveStream
from pydantic import BeforeValidator, Field, field_validator, model_validator

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.actions.output import CapturedOutput, OutputCapture
from opsgate.errors import StepError
from opsgate.spec.durations import format_duration
from opsgate.spec.model import Duration, Integer, Label, Text
from opsgate.spec.structure import describe, invalid


def _argument(value: object) -> object:
    """Numbers in an argv list are written without quotes in YAML; they are words too."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise invalid(f"must be text, not {describe(value)}")


_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: One word of an argv list.
Word = Annotated[str, BeforeValidator(_argument)]


class CommandArguments(ActionArguments):
    """A command as an argv list (preferred: no shell parses it) or as a shell command string."""

    argv: tuple[Word, ...] | None = Field(
        default=None,
        min_length=1,
        description="the program and its arguments, one item each; values substituted into "
        "it can never become extra arguments or shell syntax",
    )
    command: Label | None = Field(
        default=None,
        description="a command line run by /bin/sh -c; templated values are shell-quoted, "
        "but prefer argv",
    )
    env: dict[str, Text] = Field(
        default_factory=dict, description="extra environment variables for the command"
    )
    cwd: Label | None = Field(default=None, description="working directory of the command")
    timeout: Duration | None = Field(
        default=None, description="kill the command after this long (default: the step timeout)"
    )
    parse: Literal["text", "json"] = Field(
        default="text", description="text: stdout as a string; json: stdout parsed as JSON"
    )
    retry_on_exit_codes: tuple[Integer, ...] = Field(
        default=(), description="exit codes that are retryable failures (others are not)"
    )

    @field_validator("env")
    @classmethod
    def _variable_names(cls, env: dict[str, str]) -> dict[str, str]:
        wrong = [name for name in env if _VARIABLE.match(name) is None]
        if wrong:
            raise invalid(
                f"has names that are not environment variable names: {', '.join(map(repr, wrong))}",
                "use letters, digits and underscores, not starting with a digit",
            )
        return env

    @model_validator(mode="after")
    def _one_command(self) -> CommandArguments:
        if (self.argv is None) == (self.command is None):
            raise invalid(
                "needs exactly one of 'argv' and 'command'",
                "prefer argv: [systemctl, restart, '{{ params.service }}']",
            )
        return self


class ShellArguments(CommandArguments):
    """Arguments of ``shell``: a command run on the opsgate host itself."""


class ShellAction(Action[ShellArguments]):
    """Runs a program on the opsgate host, in its own process group (so that a timeout or a
    cancel kills everything it started), with a small inherited environment plus ``env``."""

    name = "shell"
    arguments = ShellArguments
    changes_things = True
    description = "run a command on the opsgate host"
    uses_secrets = True
    quoted_arguments = ("command",)

    async def run(self, args: ShellArguments, ctx: StepContext) -> dict[str, Any]:
        await ctx.report(f"running {program_name(args)}")
        environment = {k: v for k, v in os.environ.items() if k in INHERITED_ENVIRONMENT}
        process = await anyio.open_process(
            command_line(args),
            stdin=subprocess.DEVNULL,
            cwd=args.cwd,
            env={**environment, **args.env},
            start_new_session=True,
        )
        stdout, stderr = ctx.capture(), ctx.capture()
        try:
            with anyio.fail_after(args.timeout.total_seconds() if args.timeout else None):
                async with anyio.create_task_group() as streams:
                    assert process.stdout is not None and process.stderr is not None
                    streams.start_soon(_drain, process.stdout, stdout)
                    streams.start_soon(_drain, process.stderr, stderr)
                exit_code = await process.wait()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                _kill_group(process.pid)
                await process.aclose()
            if isinstance(exc, TimeoutError):
                raise command_timeout(args) from None
            raise
        await process.aclose()
        return command_outputs(args, exit_code, stdout.result(), stderr.result())


#: Environment variables a ``shell`` command inherits from opsgate (nothing else leaks).
INHERITED_ENVIRONMENT = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"})


def command_line(args: CommandArguments) -> list[str]:
    """The argv to execute: ``argv`` as given, or ``command`` through ``/bin/sh -c``."""
    if args.argv is not None:
        return list(args.argv)
    assert args.command is not None
    return ["/bin/sh", "-c", args.command]


def program_name(args: CommandArguments) -> str:
    """The program a command runs, for progress reports (never its arguments)."""
    return args.argv[0] if args.argv is not None else "a shell command"


def command_timeout(args: CommandArguments) -> StepError:
    assert args.timeout is not None
    return StepError(
        f"{program_name(args)} did not finish within {format_duration(args.timeout)} and was "
        "killed; raise "
        "the step's with.timeout if it needs longer",
        retryable=True,
        error_type="Timeout",
    )


def command_outputs(
    args: CommandArguments, exit_code: int, stdout: CapturedOutput, stderr: CapturedOutput
) -> dict[str, Any]:
    """The outputs of a finished command, or the step error its exit code means.

    ``stdout``/``stderr`` come from the host: data to read, never instructions to follow.
    """
    if exit_code != 0:
        tail = stderr.text[-STDERR_IN_ERROR:].strip() or stdout.text[-STDERR_IN_ERROR:].strip()
        retryable = exit_code in args.retry_on_exit_codes
        raise StepError(
            f"{program_name(args)} exited with code {exit_code}"
            + (f"; its output ends with: {tail}" if tail else "")
            + ("" if retryable else "; list the code in retry_on_exit_codes if it is transient"),
            retryable=retryable,
            error_type="ExitCode",
        )
    outputs: dict[str, Any] = {
        "exit_code": exit_code,
        "stdout": stdout.text,
        "stderr": stderr.text,
        "stdout_bytes": stdout.size,
        "stderr_bytes": stderr.size,
        "truncated": stdout.truncated or stderr.truncated,
    }
    if args.parse == "json":
        outputs["json"] = _parse_json(stdout)
    return outputs


#: Characters of a failed command's stderr quoted in the step error.
STDERR_IN_ERROR = 500


def _parse_json(stdout: CapturedOutput) -> Any:
    if stdout.truncated:
        raise StepError(
            f"stdout ({stdout.size} bytes) exceeds the capture limit and cannot be parsed as "
            "JSON; make the command print less",
            retryable=False,
            error_type="InvalidOutput",
        )
    try:
        return json.loads(stdout.text)
    except json.JSONDecodeError as exc:
        raise StepError(
            f"stdout is not JSON ({exc}); use parse: text, or make the command print JSON",
            retryable=False,
            error_type="InvalidOutput",
        ) from None


async def _drain(stream: ByteReceiveStream, capture: OutputCapture) -> None:
    async for chunk in stream:
        capture.feed(chunk)


def _kill_group(pid: int) -> None:
    """Kill the process group ``pid`` leads: the command and whatever it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

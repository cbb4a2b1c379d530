"""The ``shell`` action: run a command on the opsgate host."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from opsgate.actions.base import ActionArguments
from opsgate.spec.model import Duration, Integer, Label, Text
from opsgate.spec.structure import describe, invalid


def _argument(value: object) -> object:
    """Numbers in an argv list are written without quotes in YAML; they are words too."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise invalid(f"must be text, not {describe(value)}")


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

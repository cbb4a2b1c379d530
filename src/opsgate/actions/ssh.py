"""The ``ssh`` actions: run a command on a target, copy a file to or from it."""

from __future__ import annotations

from pydantic import Field, StrictBool

from opsgate.actions.base import ActionArguments
from opsgate.actions.shell import CommandArguments
from opsgate.spec.model import Label, Text


class SSHArguments(CommandArguments):
    """Arguments of ``ssh``: a command run on the step's target over SSH."""

    sudo: StrictBool = Field(default=False, description="run the command through sudo -n")


class SSHUploadArguments(ActionArguments):
    """Arguments of ``ssh.upload``: copy a local file to the target (SFTP)."""

    local_path: Label = Field(description="the file on the opsgate host")
    remote_path: Label = Field(description="where to write it on the target")
    mode: Text | None = Field(
        default=None, pattern=r"^0?[0-7]{3}$", description="octal permissions such as '0644'"
    )


class SSHDownloadArguments(ActionArguments):
    """Arguments of ``ssh.download``: copy a file from the target to the opsgate host (SFTP)."""

    remote_path: Label = Field(description="the file on the target")
    local_path: Label = Field(description="where to write it on the opsgate host")

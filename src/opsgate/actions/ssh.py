"""The ``ssh`` actions: run a command on a target, copy a file to or from it (asyncssh).

Host keys are verified against the target's ``known_hosts`` (default ``~/.ssh/known_hosts``):
an unknown or changed key is a non-retryable error that says how to trust the host, and
``host_key_policy: accept_new`` on a target trusts (and records) only a host never seen
before. The attempts of one execution share one connection per target.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import asyncssh
from pydantic import Field, StrictBool

from opsgate.actions.base import Action, ActionArguments, StepContext, target_section
from opsgate.actions.connections import connection
from opsgate.actions.output import OutputCapture
from opsgate.actions.shell import CommandArguments, command_outputs, command_timeout, program_name
from opsgate.errors import StepError
from opsgate.inventory import SSHConnection
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


def ssh_connection(ctx: StepContext, action: str) -> tuple[str, SSHConnection]:
    """The step target's name and SSH connection data, or a non-retryable error saying what
    the inventory lacks."""
    name, data = target_section(ctx, "ssh", "host", action, "{user: ..., key: file:...}")
    return name, SSHConnection.model_validate(data)


@asynccontextmanager
async def ssh_client(ctx: StepContext, action: str) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """The execution's connection to the step's target (opened on first use), with asyncssh's
    errors translated: auth and host keys not retryable, the network retryable."""
    name, settings = ssh_connection(ctx, action)
    key = (name, settings.host, settings.port, settings.user)
    try:
        async with connection(
            ctx.connections,
            key,
            partial(_connect, name, settings, ctx),
            _close,
            # A refused channel (a server's session limit) leaves the connection, and the
            # commands other steps run on it, intact: only a broken connection is dropped.
            broken=(OSError, asyncssh.DisconnectError, asyncssh.ConnectionLost),
        ) as client:
            yield client
    except asyncssh.PermissionDenied as exc:
        raise StepError(
            f"SSH authentication as {settings.user!r} on target {name!r} "
            f"({settings.host}:{settings.port}) failed: {exc.reason}; check the target's "
            "ssh.user and the key or password its references point at",
            retryable=False,
            error_type="AuthenticationFailed",
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _host_key_error(name, settings, str(exc.reason)) from None
    except asyncssh.ChannelOpenError as exc:
        raise StepError(
            f"target {name!r} refused an SSH channel: {exc.reason}",
            retryable=True,
            error_type="ConnectionError",
        ) from None
    except (asyncssh.DisconnectError, asyncssh.ConnectionLost) as exc:
        raise StepError(
            f"the SSH connection to target {name!r} broke: {exc.reason}",
            retryable=True,
            error_type="ConnectionError",
        ) from None
    except asyncssh.SFTPError as exc:
        raise StepError(
            f"SFTP on target {name!r} failed: {exc.reason}",
            retryable=False,
            error_type=type(exc).__name__,
        ) from None


def _host_key_error(name: str, settings: SSHConnection, reason: str) -> StepError:
    known_hosts = _known_hosts_path(settings)
    host = _known_hosts_name(settings)
    return StepError(
        f"the SSH host key of target {name!r} ({host}) is not trusted ({reason}). If the host "
        f"is new, record its key: ssh-keyscan -p {settings.port} {settings.host} >> "
        f"{known_hosts} (after checking its fingerprint), or set ssh.host_key_policy: "
        "accept_new on the target; if the key changed, find out why before replacing it",
        retryable=False,
        error_type="HostKeyNotTrusted",
    )


def _known_hosts_path(settings: SSHConnection) -> Path:
    written = settings.known_hosts or "~/.ssh/known_hosts"
    return Path(written.removeprefix("file:")).expanduser()


def _known_hosts_name(settings: SSHConnection) -> str:
    assert settings.host is not None
    return settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"


async def _connect(
    name: str, settings: SSHConnection, ctx: StepContext
) -> asyncssh.SSHClientConnection:
    await ctx.report(f"connecting to {name} over SSH")
    keys = []
    if settings.key is not None:
        passphrase = ctx.secret(settings.passphrase) if settings.passphrase else None
        try:
            keys.append(asyncssh.import_private_key(ctx.secret(settings.key), passphrase))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise StepError(
                f"the SSH key {settings.key!r} of target {name!r} cannot be used: {exc}",
                retryable=False,
                error_type="InvalidKey",
            ) from None
    known_hosts = _known_hosts_path(settings)
    trusted: Any = str(known_hosts) if known_hosts.exists() else ()
    accept_new = settings.host_key_policy == "accept_new" and not _listed(known_hosts, settings)
    client = await asyncssh.connect(
        settings.host,
        settings.port,
        username=settings.user,
        password=ctx.secret(settings.password) if settings.password else None,
        client_keys=keys,
        agent_path=None,
        known_hosts=None if accept_new else trusted,
        connect_timeout=settings.connect_timeout,
        config=None,
    )
    if accept_new:
        _record_host_key(client, known_hosts, settings)
        ctx.logger.warning(
            "trusted the new SSH host key of target %s and recorded it in %s", name, known_hosts
        )
    return client


def _listed(known_hosts: Path, settings: SSHConnection) -> bool:
    """Whether ``known_hosts`` holds any key for the host (a changed key is then refused)."""
    if not known_hosts.exists():
        return False
    assert settings.host is not None
    trusted = asyncssh.read_known_hosts(str(known_hosts))
    found = trusted.match(settings.host, settings.host, settings.port)
    return any(found[:3])


def _record_host_key(
    client: asyncssh.SSHClientConnection, known_hosts: Path, settings: SSHConnection
) -> None:
    key = client.get_server_host_key()
    assert key is not None
    line = key.export_public_key("openssh").decode().strip()
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with known_hosts.open("a", encoding="utf-8") as file:
        file.write(f"{_known_hosts_name(settings)} {line}\n")


async def _close(client: asyncssh.SSHClientConnection) -> None:
    client.close()
    await client.wait_closed()


#: Reads ``export NAME='value'`` lines from stdin, then runs the command: env values never
#: appear on a command line (the remote process list, SSH logs).
_ENV_FROM_STDIN = 'eval "$(cat)" && exec "$@"'


def remote_command(args: SSHArguments) -> tuple[str, bytes]:
    """The command line sent to the target (every word quoted; cwd applied by ``sh``,
    ``sudo -n`` in front when asked) and what to write to its stdin (the env, as exports)."""
    words = ["/bin/sh", "-c", args.command] if args.command is not None else list(args.argv or ())
    if args.cwd:
        words = ["/bin/sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh", args.cwd, *words]
    stdin = b""
    if args.env:
        words = ["/bin/sh", "-c", _ENV_FROM_STDIN, "sh", *words]
        exports = (f"export {name}={shlex.quote(value)}\n" for name, value in args.env.items())
        stdin = "".join(exports).encode()
    if args.sudo:
        words = ["sudo", "-n", "--", *words]
    return shlex.join(words), stdin


class SSHAction(Action[SSHArguments]):
    """Runs a command on the step's target over SSH, with ``shell``'s output handling.

    ``env`` is sent through the command's stdin as exports that a small ``sh`` wrapper
    evaluates: not by SSH environment requests (servers drop them unless ``AcceptEnv`` allows),
    and never on the command line (the remote process list and SSH logs would show secrets).
    On a timeout or a cancel the channel is closed, which ends the remote command.
    """

    name = "ssh"
    arguments = SSHArguments
    changes_things = True
    description = "run a command on the target over SSH"
    needs_target = True
    uses_secrets = True
    quoted_arguments = ("command",)

    async def run(self, args: SSHArguments, ctx: StepContext) -> dict[str, Any]:
        async with ssh_client(ctx, self.name) as client:
            await ctx.report(f"running {program_name(args)}")
            command, stdin = remote_command(args)
            process = await client.create_process(command, encoding=None)
            stdout, stderr = ctx.capture(), ctx.capture()
            try:
                with suppress(BrokenPipeError):
                    # The command may end before it reads its input: its exit status tells.
                    process.stdin.write(stdin)
                    process.stdin.write_eof()
                with anyio.fail_after(args.timeout.total_seconds() if args.timeout else None):
                    async with anyio.create_task_group() as streams:
                        streams.start_soon(_drain, process.stdout, stdout)
                        streams.start_soon(_drain, process.stderr, stderr)
                    finished = await process.wait()
            except TimeoutError:
                raise command_timeout(args) from None
            finally:
                process.close()
        exit_code = finished.exit_status
        if exit_code is None:
            exit_code = -1 if finished.exit_signal is None else 128
        return command_outputs(args, exit_code, stdout.result(), stderr.result())


async def _drain(stream: asyncssh.SSHReader[bytes], capture: OutputCapture) -> None:
    while chunk := await stream.read(65536):
        capture.feed(chunk)


class SSHUploadAction(Action[SSHUploadArguments]):
    """Copies a local file to the target over SFTP (the execution's SSH connection)."""

    name = "ssh.upload"
    arguments = SSHUploadArguments
    changes_things = True
    description = "copy a file to the target"
    needs_target = True

    async def run(self, args: SSHUploadArguments, ctx: StepContext) -> dict[str, Any]:
        size = (await anyio.Path(args.local_path).stat()).st_size
        async with ssh_client(ctx, self.name) as client, client.start_sftp_client() as sftp:
            await ctx.report(f"uploading {args.local_path} ({size} bytes)")
            await sftp.put(args.local_path, args.remote_path)
            if args.mode is not None:
                await sftp.chmod(args.remote_path, int(args.mode, 8))
        return {"local_path": args.local_path, "remote_path": args.remote_path, "bytes": size}


class SSHDownloadAction(Action[SSHDownloadArguments]):
    """Copies a file from the target to the opsgate host over SFTP."""

    name = "ssh.download"
    arguments = SSHDownloadArguments
    changes_things = False
    description = "copy a file from the target"
    needs_target = True

    async def run(self, args: SSHDownloadArguments, ctx: StepContext) -> dict[str, Any]:
        async with ssh_client(ctx, self.name) as client, client.start_sftp_client() as sftp:
            await ctx.report(f"downloading {args.remote_path}")
            await sftp.get(args.remote_path, args.local_path)
        size = (await anyio.Path(args.local_path).stat()).st_size
        return {"local_path": args.local_path, "remote_path": args.remote_path, "bytes": size}

"""A real SSH server on 127.0.0.1 (asyncssh) whose commands run in a sandbox folder.

The lab serves one per host, and the ``ssh`` tests use it as their peer. Each command runs
with ``/bin/sh -c`` in the sandbox (``root/bin`` first on PATH, where the lab's stand-in tools
live), in a process group of its own that is killed when the client closes the channel first;
SFTP is rooted at the sandbox. Users log in with the client key, or with a password where one
is set. What the server received (commands, abandoned channels) is recorded for assertions,
and appended to ``command_log`` when given, so a separate process can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh


@dataclass
class SandboxSSHServer:
    """A running server: where it listens, its keys, and what it received."""

    host: str
    port: int
    root: Path
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    #: Login users and their password; ``None`` allows only the client key.
    users: Mapping[str, str | None]
    command_log: Path | None = None
    commands: list[str] = field(default_factory=list)
    #: Commands whose channel the client closed before they finished.
    abandoned: list[str] = field(default_factory=list)
    connections: int = 0

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        public = (key or self.host_key).export_public_key("openssh").decode().strip()
        return f"[{self.host}]:{self.port} {public}\n"

    def write_client_key(self, path: Path) -> Path:
        path.write_bytes(self.client_key.export_private_key("openssh"))
        path.chmod(0o600)
        return path

    def record(self, command: str) -> None:
        self.commands.append(command)
        if self.command_log is not None:
            with self.command_log.open("a") as log:
                log.write(command.replace("\n", "\\n") + "\n")


def _server_class(peer: SandboxSSHServer) -> type[asyncssh.SSHServer]:
    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            peer.connections += 1

        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            expected = peer.users.get(username)
            return expected is not None and expected == password

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            expected = peer.client_key.export_public_key()
            return username in peer.users and key.export_public_key() == expected

    return Server


def _process_handler(
    peer: SandboxSSHServer,
) -> Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        peer.record(command)
        local = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            cwd=peer.root,
            # root/bin first: the stand-in tools (and the tests' fakes) live there.
            env={**os.environ, "PATH": f"{peer.root / 'bin'}:{os.environ.get('PATH', '')}"},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert local.stdin is not None and local.stdout is not None and local.stderr is not None

        async def feed() -> None:
            assert local.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while data := await process.stdin.read(65536):
                    local.stdin.write(data)
                    await local.stdin.drain()
            local.stdin.close()

        async def finish() -> int:
            """The exit code once the command ended, whether or not the client closed stdin.

            A client at a terminal keeps stdin open: as with sshd, the command's end, not the
            client's EOF, ends the request.
            """
            assert local.stdout is not None and local.stderr is not None
            feeding = asyncio.ensure_future(feed())
            await asyncio.gather(
                _pump(local.stdout, process.stdout), _pump(local.stderr, process.stderr)
            )
            code = await local.wait()
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
            return code

        done = asyncio.ensure_future(finish())
        closed = asyncio.ensure_future(process.channel.wait_closed())
        await asyncio.wait([done, closed], return_when=asyncio.FIRST_COMPLETED)
        if done.done():
            closed.cancel()
            process.exit(done.result())
            return
        peer.abandoned.append(command)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(local.pid, signal.SIGKILL)
        done.cancel()
        await local.wait()

    return handle


async def _pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while data := await source.read(65536):
        sink.write(data)


@asynccontextmanager
async def serve_ssh(
    root: Path,
    users: Mapping[str, str | None] | None = None,
    *,
    host_key: asyncssh.SSHKey | None = None,
    client_key: asyncssh.SSHKey | None = None,
    command_log: Path | None = None,
) -> AsyncIterator[SandboxSSHServer]:
    """Serve ``root`` (an existing folder) on a free port of 127.0.0.1 until the block ends.

    Keys not given are generated for this server alone.
    """
    peer = SandboxSSHServer(
        host="127.0.0.1",
        port=0,
        root=root,
        host_key=host_key or asyncssh.generate_private_key("ssh-ed25519"),
        client_key=client_key or asyncssh.generate_private_key("ssh-ed25519"),
        users=users or {"deploy": "deploy-password-1"},
        command_log=command_log,
    )
    server = await asyncssh.create_server(
        _server_class(peer),
        "127.0.0.1",
        0,
        server_host_keys=[peer.host_key],
        process_factory=_process_handler(peer),
        encoding=None,
        sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=str(root).encode()),
        allow_scp=False,
    )
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()

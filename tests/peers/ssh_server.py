"""A real SSH server on 127.0.0.1 (asyncssh) for the ``ssh`` tests.

It runs each command with ``/bin/sh -c`` in a temporary folder, in a process group of its
own that it kills when the client closes the channel first, and serves SFTP rooted at that
folder. Users log in with a password or with the client key the fixture made. It records what
it received (commands, closed channels) so that tests assert on the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh


@dataclass
class PeerSSHServer:
    host: str
    port: int
    root: Path
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    users: dict[str, str]
    commands: list[str] = field(default_factory=list)
    #: Commands whose channel the client closed before they finished.
    abandoned: list[str] = field(default_factory=list)
    connections: int = 0

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        public = (key or self.host_key).export_public_key("openssh").decode().strip()
        return f"[{self.host}]:{self.port} {public}\n"

    def write_client_key(self, path: Path) -> Path:
        path.write_bytes(self.client_key.export_private_key("openssh"))
        return path


def _server_class(peer: PeerSSHServer) -> type[asyncssh.SSHServer]:
    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            peer.connections += 1

        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return peer.users.get(username) == password

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            expected = peer.client_key.export_public_key()
            return username in peer.users and key.export_public_key() == expected

    return Server


def _process_handler(
    peer: PeerSSHServer,
) -> Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        peer.commands.append(command)
        local = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            cwd=peer.root,
            # root/bin first: tests put stand-ins (a fake sudo) there.
            env={**os.environ, "PATH": f"{peer.root / 'bin'}:{os.environ.get('PATH', '')}"},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert local.stdin is not None and local.stdout is not None and local.stderr is not None

        async def feed() -> None:
            assert local.stdin is not None
            while data := await process.stdin.read(65536):
                local.stdin.write(data)
                await local.stdin.drain()
            local.stdin.close()

        async def finish() -> int:
            assert local.stdout is not None and local.stderr is not None
            await asyncio.gather(
                feed(), _pump(local.stdout, process.stdout), _pump(local.stderr, process.stderr)
            )
            return await local.wait()

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
    root: Path, users: dict[str, str] | None = None
) -> AsyncIterator[PeerSSHServer]:
    """Serve ``root`` (an existing folder) on a free port of 127.0.0.1 until the block ends."""
    peer = PeerSSHServer(
        host="127.0.0.1",
        port=0,
        root=root,
        host_key=asyncssh.generate_private_key("ssh-ed25519"),
        client_key=asyncssh.generate_private_key("ssh-ed25519"),
        users=users or {"deploy": "deploy-password-1"},
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

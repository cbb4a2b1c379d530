"""``docs/tools.md``, generated from the live tool list (``python -m opsgate.server.docs``).

A test regenerates it and fails when the file differs, so the reference never drifts from
what ``tools/list`` serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.types import Tool, ToolAnnotations

from opsgate.config import Settings
from opsgate.server.app import create_server

TOOLS_DOC = Path(__file__).parents[3] / "docs" / "tools.md"

_HEADER = """# MCP tools

Generated from the live `tools/list` of `opsgate serve` by `python -m opsgate.server.docs`
(a test fails when this file is stale). Every tool acts as the authenticated principal (stdio:
`OPSGATE_PRINCIPAL`; HTTP: the bearer token's principal); none takes a principal argument.
Errors come back as tool errors (`isError: true`) whose text says what to do next.

| tool | read-only | destructive | summary |
| --- | --- | --- | --- |
"""


def _flag(value: bool | None) -> str:
    return "yes" if value else "no"


def _kind(spec: dict[str, Any], defs: dict[str, Any]) -> str:
    """A schema's type in words: enums list their values, ``or`` joins the options (a ``|``
    would split the Markdown table)."""
    if "$ref" in spec:
        spec = defs.get(spec["$ref"].split("/")[-1], {})
    if "enum" in spec:
        return " / ".join(f"`{value}`" for value in spec["enum"])
    if "anyOf" in spec:
        return " or ".join(_kind(option, defs) for option in spec["anyOf"])
    return str(spec.get("type", "any"))


def _argument_rows(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = []
    for name, spec in schema.get("properties", {}).items():
        kind = _kind(spec, schema.get("$defs", {}))
        bounds = ", ".join(
            f"{key} {spec[key]}" for key in ("minimum", "maximum", "maxLength") if key in spec
        )
        default = f"`{json.dumps(spec['default'])}`" if "default" in spec else ""
        description = spec.get("description", "")
        rows.append(
            f"| `{name}` | {kind} | {'yes' if name in required else 'no'} | {default} | "
            f"{bounds} | {description} |"
        )
    return rows


def render(tools: list[Tool]) -> str:
    """The Markdown reference of ``tools``, in their served order."""
    lines = [_HEADER.rstrip("\n")]
    for tool in tools:
        hints = tool.annotations or ToolAnnotations()
        summary = (tool.description or "").split(". ")[0].rstrip(".") + "."
        lines.append(
            f"| [`{tool.name}`](#{tool.name}) | {_flag(hints.read_only_hint)} | "
            f"{_flag(hints.destructive_hint)} | {summary} |"
        )
    for tool in tools:
        lines += ["", f"## {tool.name}", "", tool.description or "", ""]
        rows = _argument_rows(tool.input_schema)
        if rows:
            lines += [
                "| argument | type | required | default | bounds | description |",
                "| --- | --- | --- | --- | --- | --- |",
                *rows,
            ]
        else:
            lines.append("No arguments.")
        if tool.output_schema is not None:
            fields = ", ".join(f"`{name}`" for name in tool.output_schema.get("properties", {}))
            lines += ["", f"Returns: {fields}."]
    return "\n".join(lines) + "\n"


async def live_tools() -> list[Tool]:
    """The tools as served (listing needs no database)."""
    return await create_server(Settings(database_url="sqlite://")).list_tools()


def main() -> None:
    """Write docs/tools.md (or print it with ``-``)."""
    text = render(anyio.run(live_tools))
    if sys.argv[1:] == ["-"]:
        sys.stdout.write(text)
    else:
        TOOLS_DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

"""docs/tools.md is generated from the live tool list and must not go stale."""

from __future__ import annotations

import pytest

from opsgate.server.docs import TOOLS_DOC, live_tools, render

pytestmark = pytest.mark.anyio


async def test_docs_tools_md_matches_the_served_tools() -> None:
    expected = render(await live_tools())
    assert TOOLS_DOC.read_text(encoding="utf-8") == expected, (
        "docs/tools.md is stale: regenerate it with `.venv/bin/python -m opsgate.server.docs`"
    )
    for tool in await live_tools():
        assert f"## {tool.name}" in expected

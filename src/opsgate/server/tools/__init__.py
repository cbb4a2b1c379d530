"""The MCP tools, one small module per group, registered in the order of the contract.

Every tool is a thin adapter over :mod:`opsgate.service`: typed, described arguments in,
a pydantic result out, errors translated once by :func:`opsgate.server.errors.translated`.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

from opsgate.server.tools import control, executions, governance, schedules, targets, workflows


def register_tools(server: MCPServer[Any]) -> None:
    workflows.register(server)
    governance.register_reviews(server)
    executions.register(server)
    control.register(server)
    governance.register_approvals(server)
    schedules.register(server)
    targets.register(server)

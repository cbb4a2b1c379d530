"""The MCP server: opsgate's use cases as tools, resources and prompts over stdio and HTTP.

Thin adapters over :mod:`opsgate.service` (parse, call, shape); the worker and the event bus run
in the same process, and the bus turns new events into progress and resource notifications.
"""

from opsgate.server.app import create_server

__all__ = ["create_server"]

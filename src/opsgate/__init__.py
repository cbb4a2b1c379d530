"""opsgate: governed operational workflows for AI assistants, over MCP."""

from importlib.metadata import version as _version

__version__ = _version("opsgate")

__all__ = ["__version__"]

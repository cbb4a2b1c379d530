"""Async tests here run on asyncio through anyio's own pytest plugin."""

from __future__ import annotations

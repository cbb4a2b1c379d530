"""Durations as written in blueprints: a number and a unit, such as ``500ms`` or ``4h``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")

DURATION_HINT = "write a number and a unit: 500ms, 30s, 2m, 4h or 1d"


def parse_duration(value: object) -> timedelta:
    """Parse a duration string; a bare number is refused because its unit would be a guess."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    amount, unit = match.groups()
    return timedelta(seconds=float(amount) * _UNITS[unit])


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of ``value`` in the blueprint syntax."""
    millis = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"

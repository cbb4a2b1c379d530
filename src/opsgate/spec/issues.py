"""Validation issues: every problem in a document, located by file, line, column and path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

PathPart = str | int
Path = tuple[PathPart, ...]


class Severity(StrEnum):
    """How bad an issue is: errors make a document unusable, warnings do not."""

    #: The document cannot be loaded or run as written.
    ERROR = "error"
    #: The document loads, but something in it is probably a mistake.
    WARNING = "warning"


def format_path(path: Sequence[PathPart]) -> str:
    """Render ``("steps", 2, "depends_on", 0)`` as ``steps[2].depends_on[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a document. Lines and columns count from 1."""

    severity: Severity
    message: str
    file: str
    line: int
    column: int
    path: str = ""
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: {self.severity}: {self.message}"
        if self.path:
            text += f" (at {self.path})"
        if self.hint:
            text += f" — hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": str(self.severity),
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "hint": self.hint,
        }


def has_errors(issues: Sequence[Issue]) -> bool:
    return any(issue.is_error for issue in issues)

"""Small pieces the policy and roles loaders share (structural validation itself, pydantic
errors as located issues and did-you-mean hints, lives in :mod:`opsgate.spec.structure`)."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from pydantic import AfterValidator, Strict

from opsgate.spec.issues import Issue, Severity
from opsgate.spec.structure import invalid


def _prose(value: str) -> str:
    if not value.strip():
        raise invalid("must not be empty")
    return value


def _name(value: str) -> str:
    if any(char.isspace() for char in _prose(value)):
        raise invalid(f"must not contain spaces, not {value!r}", "write names such as ops-manager")
    return value


#: Text a person or an agent reads (a reason, a description) or an expression: never blank.
Prose = Annotated[str, Strict(), AfterValidator(_prose)]
#: A name people write and match on: a rule id, a role, a principal. Non-empty, no spaces.
Name = Annotated[str, Strict(), AfterValidator(_name)]


def read_text(path: FilePath) -> tuple[str | None, list[Issue]]:
    """The UTF-8 text of ``path``, or ``None`` and an issue saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8"), []
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror or exc}"
    return None, [Issue(Severity.ERROR, f"{path} {problem}", str(path), 1, 1)]

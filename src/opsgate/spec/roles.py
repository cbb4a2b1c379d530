"""Roles: which principals hold which roles (``policies/roles.yaml``).

```yaml
principals:
  alice: {roles: [operator]}
  bob: {roles: [operator, ops-manager]}
default_roles: [viewer]
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath

from pydantic import BaseModel, ConfigDict, Field

from opsgate.spec.checks import Name, read_text
from opsgate.spec.issues import Issue, Severity
from opsgate.spec.source import YAMLSyntaxError, parse_yaml
from opsgate.spec.structure import describe, validate_model

#: File names that hold the roles of a policy directory (never read as policy files).
ROLES_FILE_NAMES = ("roles.yaml", "roles.yml")
ROLES_HINT = "write principals: {alice: {roles: [operator]}} and default_roles: [viewer]"


@dataclass(frozen=True, slots=True)
class RoleBook:
    """Principals and their roles; every principal, known or not, holds ``default_roles``."""

    principals: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default_roles: frozenset[str] = frozenset()

    def roles_of(self, principal: str) -> frozenset[str]:
        return self.principals.get(principal, frozenset()) | self.default_roles

    def holders(self, role: str) -> frozenset[str] | None:
        """The named principals holding ``role``; ``None`` when everyone holds it by default."""
        if role in self.default_roles:
            return None
        return frozenset(name for name, roles in self.principals.items() if role in roles)

    @property
    def known_roles(self) -> frozenset[str]:
        return frozenset().union(*self.principals.values(), self.default_roles)


class _Principal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[Name, ...]


class _RolesDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    principals: dict[Name, _Principal] = Field(default_factory=dict)
    default_roles: tuple[Name, ...] = ()


def parse_roles(text: str, file: str) -> tuple[RoleBook | None, list[Issue]]:
    """Validate a roles file; the RoleBook is ``None`` when it has errors."""
    try:
        document = parse_yaml(text, file)
    except YAMLSyntaxError as exc:
        return None, [exc.issue]
    if document.data is None:
        warning = document.issue(
            (), "empty roles file: no principal holds a role", ROLES_HINT, Severity.WARNING
        )
        return RoleBook(), [warning]
    if not isinstance(document.data, dict):
        problem = f"a roles file is a mapping, not {describe(document.data)}"
        return None, [document.issue((), problem, ROLES_HINT)]
    parsed, issues = validate_model(_RolesDocument, document.data, document)
    if parsed is None:
        return None, issues
    principals = {name: frozenset(entry.roles) for name, entry in parsed.principals.items()}
    return RoleBook(principals, frozenset(parsed.default_roles)), issues


def load_roles(path: str | os.PathLike[str]) -> tuple[RoleBook | None, list[Issue]]:
    """Load a roles file. A missing file is an empty RoleBook and a warning: then nobody
    holds a role, so approvals by role cannot be given and role checks fail closed."""
    file = FilePath(path)
    if not file.exists():
        warning = Issue(
            Severity.WARNING,
            f"roles file {file} not found: no principal holds a role",
            str(file),
            1,
            1,
            hint=f"create it: {ROLES_HINT}",
        )
        return RoleBook(), [warning]
    text, issues = read_text(file)
    if text is None:
        return None, issues
    return parse_roles(text, str(file))

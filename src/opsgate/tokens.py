"""Bearer tokens for the Streamable HTTP transport: minted once, stored hashed, mapped to a
principal and its roles.

A token reads ``ogt_<id>_<secret>``: the id finds its record, the secret (256 random bits) is
checked against the SHA-256 stored for it. A fast hash is right for random secrets of that
size (nothing to brute-force), and it keeps every request's check cheap. The file (JSON,
mode 0600) holds no secret: whoever reads it cannot authenticate. It is re-read when it
changes, so ``opsgate token revoke`` takes effect on a running server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opsgate.errors import ConfigurationError, NotFoundError

_PREFIX = "ogt"
_TOKEN = re.compile(rf"^{_PREFIX}_([0-9a-f]{{8}})_([A-Za-z0-9_-]{{20,}})$")
_NAME = re.compile(r"^[A-Za-z0-9@._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One minted token, without its secret."""

    id: str
    name: str
    roles: tuple[str, ...]
    sha256: str
    created_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "roles": list(self.roles),
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
        }


class TokenBook:
    """The tokens file: create, list, revoke, and verify a presented token."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int] | None = None

    def create(self, name: str, roles: list[str]) -> tuple[TokenRecord, str]:
        """Mint a token for principal ``name``; the token itself is returned only here."""
        if not _NAME.match(name):
            raise ConfigurationError(
                f"invalid principal name {name!r}: use 1-128 letters, digits and @._-"
            )
        records = self._load()
        token_id = secrets.token_hex(4)
        while token_id in records:
            token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(
            token_id,
            name,
            tuple(dict.fromkeys(r.strip() for r in roles if r.strip())),
            _digest(secret),
            datetime.now(UTC),
        )
        self._save({**records, token_id: record})
        return record, f"{_PREFIX}_{token_id}_{secret}"

    def records(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        return sorted(self._load().values(), key=lambda r: (r.created_at, r.id))

    def revoke(self, name_or_id: str) -> tuple[TokenRecord, ...]:
        """Remove the token with this id, or every token of this principal."""
        records = self._load()
        gone = tuple(r for r in records.values() if name_or_id in (r.id, r.name))
        if not gone:
            known = [*records, *(r.name for r in records.values())]
            raise NotFoundError("token", name_or_id, known)
        self._save({i: r for i, r in records.items() if r not in gone})
        return gone

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid token; ``None`` for anything else (unknown, revoked, malformed)."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        token_id, secret = match.groups()
        record = self._load().get(token_id)
        if record is None or not hmac.compare_digest(record.sha256, _digest(secret)):
            return None
        return record

    def _load(self) -> dict[str, TokenRecord]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._records = _read(self.path)
            self._stamp = stamp
        return dict(self._records)

    def _save(self, records: dict[str, TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"tokens": [r.to_json() for r in records.values()]}
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
                json.dump(document, file, indent=2)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._stamp = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _read(path: Path) -> dict[str, TokenRecord]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {
            entry["id"]: TokenRecord(
                entry["id"],
                entry["name"],
                tuple(entry["roles"]),
                entry["sha256"],
                datetime.fromisoformat(entry["created_at"]),
            )
            for entry in document["tokens"]
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"the tokens file {path} is unreadable ({exc}); fix it or delete it and mint new "
            "tokens with: opsgate token create NAME --roles ROLE,..."
        ) from exc

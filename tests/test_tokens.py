"""The tokens file: minted once, stored hashed, verified, revoked, and refused when corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.errors import ConfigurationError, NotFoundError
from opsgate.tokens import TokenBook


def test_a_token_verifies_until_revoked_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    book = TokenBook(tmp_path / "tokens.json")
    record, token = book.create("alice", ["operator", " ops-manager", ""])
    assert record.roles == ("operator", "ops-manager")
    assert book.verify(token) == record
    assert token.split("_", 2)[2] not in (tmp_path / "tokens.json").read_text()
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert book.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert book.verify("not a token") is None
    other = TokenBook(tmp_path / "tokens.json")  # another process: the CLI
    assert [r.id for r in other.revoke("alice")] == [record.id]
    assert book.verify(token) is None  # the server notices the file changed
    with pytest.raises(NotFoundError, match="'alice'"):
        other.revoke("alice")


def test_a_bad_principal_name_or_a_corrupt_file_is_refused_with_a_fix(tmp_path: Path) -> None:
    book = TokenBook(tmp_path / "tokens.json")
    with pytest.raises(ConfigurationError, match="invalid principal name"):
        book.create("bad name", [])
    (tmp_path / "tokens.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="opsgate token create"):
        book.records()

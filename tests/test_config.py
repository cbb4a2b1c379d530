"""Settings: environment over opsgate.toml over defaults, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.config import load_settings
from opsgate.errors import ConfigurationError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "BLUEPRINTS", "POLICIES", "INVENTORY", "PRINCIPAL", "TOKENS"):
        monkeypatch.delenv(f"OPSGATE_{name}", raising=False)
    monkeypatch.setenv("OPSGATE_CONFIG", str(tmp_path / "opsgate.toml"))


def test_defaults_are_a_user_sqlite_file_and_the_local_directories() -> None:
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("/opsgate.db")
    assert settings.blueprints == Path("blueprints")
    assert settings.policies == Path("policies")
    assert settings.inventory is None
    assert settings.principal


def test_the_toml_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "opsgate.toml").write_text('database_url = "sqlite:///x.db"\nprincipal = "bob"\n')
    settings = load_settings()
    assert (settings.database_url, settings.principal) == ("sqlite:///x.db", "bob")


def test_the_environment_wins_over_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "opsgate.toml").write_text('principal = "bob"\n')
    monkeypatch.setenv("OPSGATE_PRINCIPAL", "alice")
    assert load_settings().principal == "alice"


def test_a_malformed_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "opsgate.toml").write_text("blueprints = 3\n")
    with pytest.raises(ConfigurationError, match="OPSGATE_BLUEPRINTS"):
        load_settings()

"""Settings: the only module that reads the environment.

Sources, strongest first: ``OPSGATE_*`` environment variables, then an optional ``opsgate.toml``
in the working directory (or the file named by ``OPSGATE_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from opsgate.errors import ConfigurationError


def _data_dir() -> Path:
    return Path(platformdirs.user_data_dir("opsgate", appauthor=False))


def default_database_url() -> str:
    """A SQLite file under the user's data directory (created on first use)."""
    return f"sqlite:///{_data_dir() / 'opsgate.db'}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


class Settings(BaseSettings):
    """Where opsgate keeps its state and finds its documents, and who the local caller is."""

    model_config = SettingsConfigDict(env_prefix="OPSGATE_", extra="ignore")

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    blueprints: Path = Field(default=Path("blueprints"), description="directory of blueprints")
    policies: Path = Field(default=Path("policies"), description="directory of policies")
    inventory: Path | None = Field(default=None, description="inventory file of targets")
    principal: str = Field(default_factory=_os_user, description="the local (stdio/CLI) caller")
    tokens: Path | None = Field(default=None, description="HTTP bearer tokens file")

    @property
    def tokens_file(self) -> Path:
        """The HTTP bearer tokens file: ``tokens``, or ``tokens.json`` in the user data dir."""
        return self.tokens if self.tokens is not None else _data_dir() / "tokens.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("OPSGATE_CONFIG", "opsgate.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a malformed value into a :class:`ConfigurationError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"OPSGATE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc

"""Schema migrations, run in code: when the server starts and by ``opsgate db upgrade``.

The Alembic configuration is built here rather than read from an ``alembic.ini``, and the
scripts in ``migrations/`` are found as package data (``opsgate.stores:migrations``), so an
installed opsgate migrates itself from wherever it is installed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import DBAPIError

from opsgate.stores.database import create_engine_for, store_error

SCRIPT_LOCATION = "opsgate.stores:migrations"
#: Not Alembic's default name, so that opsgate can share a PostgreSQL schema with other tools.
VERSION_TABLE = "opsgate_schema_version"
#: PostgreSQL advisory lock held while migrating, so that replicas starting together take turns.
_MIGRATION_LOCK = 0x6F707367


def alembic_config(connection: sa.Connection) -> Config:
    """An Alembic configuration that migrates through ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine) -> str:
    """Bring the schema to the newest revision (a no-op when it is there); the revision applied."""
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            command.upgrade(alembic_config(connection), "head")
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            revision = context.get_current_revision()
    except DBAPIError as exc:
        raise store_error(exc, engine) from exc
    assert revision is not None, "an upgrade to head always leaves a revision"
    return revision


def upgrade_database(url: str) -> str:
    """Migrate the database at ``url`` to the newest revision and return that revision."""
    engine = create_engine_for(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()

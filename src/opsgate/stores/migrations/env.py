"""Alembic environment: runs on the connection that :func:`opsgate.stores.migrate.upgrade` opens.

There is no ``alembic.ini``: the configuration is built in code, so the installed package
migrates itself wherever it lives.
"""

from alembic import context
from sqlalchemy import Connection

from opsgate.stores.migrate import VERSION_TABLE
from opsgate.stores.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "opsgate's migrations run online only, on a connection from "
        "opsgate.stores.migrate.upgrade(); use `opsgate db upgrade`"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

"""Shared fixtures: a controllable clock, and databases for the store tests.

Every test that takes ``database_url`` (or ``store``) runs twice: on a SQLite file in its
``tmp_path`` and on the real PostgreSQL server, in a schema of its own that is dropped after the
test. The PostgreSQL variant carries the ``postgres`` marker. When the server is unreachable the
PostgreSQL variants are skipped, except under ``CI=true`` where they fail: CI must run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from opsgate.stores import SQLStore
from tests.clocks import FakeClock

POSTGRES_URL = os.environ.get(
    "OPSGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio (asyncssh, among others, runs only there)."""
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    """An autocommit engine on the test server, or a skip (a failure under ``CI=true``)."""
    engine = sa.create_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        message = (
            f"PostgreSQL at {POSTGRES_URL} is unreachable ({exc.orig}); start it with: "
            f"{POSTGRES_START}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the PostgreSQL tests to run: {message}")
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'opsgate.db'}"
        return
    admin: sa.Engine = request.getfixturevalue("postgres_admin")
    schema = f"opsgate_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[SQLStore]:
    """A migrated store on each database."""
    store = SQLStore.open(database_url, clock=clock)
    store.migrate()
    yield store
    store.close()

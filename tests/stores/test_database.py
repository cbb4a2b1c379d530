"""Engines: URL handling, SQLite's settings, and failures that say what to check."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from opsgate.errors import StoreError
from opsgate.stores import SQLStore, create_engine_for, database
from opsgate.stores.database import READ_ONLY, store_error


@pytest.mark.parametrize("url", ["not a url", "://nothing"])
def test_a_malformed_url_is_a_store_error_showing_the_accepted_forms(url: str) -> None:
    with pytest.raises(StoreError, match=r"sqlite:///path/to/opsgate\.db or postgresql\+psycopg"):
        create_engine_for(url)


def test_an_unsupported_database_is_refused_by_name() -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        create_engine_for("mysql://user@localhost/opsgate")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_sqlite_without_a_file_is_refused(url: str) -> None:
    with pytest.raises(StoreError, match="names no SQLite file"):
        create_engine_for(url)


def test_an_unreachable_server_is_a_store_error_saying_what_to_check() -> None:
    with pytest.raises(StoreError) as raised:
        create_engine_for("postgresql+psycopg://opsgate:s3cret@127.0.0.1:1/opsgate")
    message = str(raised.value)
    assert "check that the database server is running" in message
    assert "127.0.0.1:1" in message
    assert "s3cret" not in message
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)


@pytest.mark.postgres
def test_a_plain_postgresql_url_uses_psycopg_3(postgres_admin: sa.Engine) -> None:
    plain = postgres_admin.url.set(drivername="postgresql")
    engine = create_engine_for(plain.render_as_string(hide_password=False))
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


def test_sqlite_creates_its_directory_and_runs_durable_and_concurrent(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'a' / 'b' / 'opsgate.db'}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "b" / "opsgate.db").is_file()
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "foreign_keys": 1,
        "synchronous": 2,
    }


def test_sqlite_write_transactions_hold_the_write_lock_from_begin(tmp_path: Path) -> None:
    path = tmp_path / "opsgate.db"
    engine = create_engine_for(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with engine.begin():
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_sqlite_read_only_transactions_leave_the_write_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "opsgate.db"
    engine = create_engine_for(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                conn.exec_driver_sql("SELECT 1")
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_a_store_on_an_unmigrated_database_says_to_run_db_upgrade(database_url: str) -> None:
    store = SQLStore.open(database_url)
    try:
        with pytest.raises(StoreError, match="run `opsgate db upgrade`"):
            store.get_execution("exe_1")
    finally:
        store.close()


@pytest.mark.postgres
def test_postgresql_pings_only_connections_that_sat_idle(
    postgres_admin: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine_for(postgres_admin.url.render_as_string(hide_password=False))
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 2"))
        assert statements == ["SELECT 2"]  # checked in a moment ago: no ping round trip
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with postgres_admin.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
        with engine.connect() as conn:  # idle "too long": pinged, found dead, replaced
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_connection_killed_while_warm_fails_one_transaction_only(
    postgres_admin: sa.Engine,
) -> None:
    engine = create_engine_for(postgres_admin.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with postgres_admin.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(sa.exc.OperationalError) as raised, engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        assert raised.value.connection_invalidated  # the worker retries this as a StoreError
        assert "check that the database server is running" in str(store_error(raised.value, engine))
        with engine.connect() as conn:  # the pool dropped the dead connection
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        engine.dispose()

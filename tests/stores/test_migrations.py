"""Migrations: applied to an empty database, idempotent, and equal to the table definitions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import opsgate.stores
from opsgate.stores import SQLStore, create_engine_for, upgrade_database
from opsgate.stores.migrate import VERSION_TABLE, alembic_config
from opsgate.stores.tables import metadata
from tests.stores.builders import new_execution

HEAD = "0004"


def _table_names(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_on_an_empty_database(database_url: str) -> None:
    assert _table_names(database_url) == set()
    assert upgrade_database(database_url) == HEAD
    assert _table_names(database_url) == set(metadata.tables) | {VERSION_TABLE}


def test_upgrading_again_changes_nothing_and_keeps_the_data(database_url: str) -> None:
    upgrade_database(database_url)
    store = SQLStore.open(database_url)
    try:
        execution = new_execution(store)
        assert store.migrate() == HEAD
        assert upgrade_database(database_url) == HEAD
        assert store.get_execution(execution.id) == execution
        with store.engine.connect() as conn:
            versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))
            assert versions.scalars().all() == [HEAD]
    finally:
        store.close()


def test_the_migrated_schema_equals_the_table_definitions(database_url: str) -> None:
    upgrade_database(database_url)
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_every_table(database_url: str) -> None:
    upgrade_database(database_url)
    engine = create_engine_for(database_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
    finally:
        engine.dispose()
    assert _table_names(database_url) == {VERSION_TABLE}


def test_migration_scripts_ship_inside_the_package(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'opsgate.db'}")
    try:
        with engine.connect() as conn:
            scripts = ScriptDirectory.from_config(alembic_config(conn))
    finally:
        engine.dispose()
    package = Path(opsgate.stores.__file__).parent
    assert Path(scripts.dir).resolve() == (package / "migrations").resolve()
    assert scripts.get_heads() == [HEAD]


def test_processes_upgrading_at_the_same_time_take_turns(database_url: str) -> None:
    start = threading.Barrier(4)

    def upgrade_when_all_are_ready(_: int) -> str:
        start.wait()
        return upgrade_database(database_url)

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(upgrade_when_all_are_ready, range(4))) == [HEAD] * 4
    assert _table_names(database_url) == set(metadata.tables) | {VERSION_TABLE}


def test_upgrading_from_0001_keeps_executions_awake_and_without_cleanup(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            conn.execute(
                sa.text(
                    "INSERT INTO blueprint_snapshots (digest, name, version, content, created_at) "
                    "VALUES ('d', 'restart_service', '1', '{}', :at)"
                ),
                {"at": "2026-03-01 09:00:00"},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO executions (id, workflow_name, blueprint_digest, parameters, "
                    "status, requested_by, last_seq, created_at, updated_at) VALUES ('exe_old', "
                    "'restart_service', 'd', '{}', 'pending', 'alice', 1, :at, :at)"
                ),
                {"at": "2026-03-01 09:00:00"},
            )
    finally:
        engine.dispose()
    assert upgrade_database(database_url) == HEAD
    store = SQLStore.open(database_url)
    try:
        old = store.get_execution("exe_old")
        assert (old.wake_at, old.cancel_cleanup) == (None, False)
        assert [e.id for e in store.claim_executions("w", lease_seconds=5, limit=5)] == ["exe_old"]
    finally:
        store.close()


def test_downgrading_to_0001_drops_only_the_new_columns(database_url: str) -> None:
    upgrade_database(database_url)
    engine = create_engine_for(database_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("executions")}
        assert {"wake_at", "cancel_cleanup"}.isdisjoint(columns)
        assert {"lease_owner", "lease_expires_at", "deadline_at"} <= columns
    finally:
        engine.dispose()

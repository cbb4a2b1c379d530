"""Prepared statements on the driver's cursor: the same values as SQLAlchemy's execution, its
errors, its disconnect handling and its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from opsgate.models import EventType
from opsgate.stores import SQLStore
from opsgate.stores.prepared import execute_many, prepare
from opsgate.stores.tables import events, executions
from tests.stores.builders import new_execution

BERLIN = timezone(timedelta(hours=1))


def _event(execution_id: str, seq: int, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "execution_id": execution_id,
        "schedule_id": None,
        "seq": seq,
        "type": EventType.STEP_PROGRESSED,
        "actor": "worker-1",
        "step_id": "check",
        "target": None,
        "attempt": 2,
        "data": {"message": "Exporting BIOS settings…", "nested": {"list": [1, 2.5, None]}},
        "occurred_at": datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=BERLIN),
    }
    return {**values, **overrides}


def _insert_event() -> sa.Insert:
    columns = [column for column in events.c if column.name != "id"]
    return (
        sa.insert(events)
        .values({column: sa.bindparam(f"v_{column.name}", type_=column.type) for column in columns})
        .returning(*events.c)
    )


def _values(event: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{key}": value for key, value in event.items()}


def test_rows_come_back_as_sqlalchemy_reads_them(store: SQLStore) -> None:
    execution = new_execution(store)
    statement = prepare(_insert_event(), store.engine.dialect)
    with store.engine.begin() as conn:
        [written] = execute_many(conn, statement, [_values(_event(execution.id, 2))])
        read = conn.execute(sa.select(events).where(events.c.id == written.id)).one()
    assert written._asdict() == dict(read._mapping)
    assert written.occurred_at == datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert written.occurred_at.tzinfo is UTC
    assert written.type == "step.progressed" and isinstance(written.type, EventType)
    assert written.data["nested"] == {"list": [1, 2.5, None]}


def test_several_parameter_sets_return_their_rows_in_order(store: SQLStore) -> None:
    execution = new_execution(store)
    statement = prepare(_insert_event(), store.engine.dialect)
    with store.engine.begin() as conn:
        rows = execute_many(
            conn, statement, [_values(_event(execution.id, seq)) for seq in (2, 3, 4)]
        )
    assert [row.seq for row in rows] == [2, 3, 4]
    assert rows[0].id < rows[1].id < rows[2].id


def test_values_the_statement_carries_are_bound_with_their_types(store: SQLStore) -> None:
    execution = new_execution(store)
    bump = (
        sa.update(executions)
        .where(executions.c.id == sa.bindparam("b_id"))
        .values(last_seq=executions.c.last_seq + 5, progress=0.5)
        .returning(executions.c.last_seq, executions.c.progress)
    )
    with store.engine.begin() as conn:
        [row] = execute_many(conn, prepare(bump, conn.dialect), [{"b_id": execution.id}])
    assert (row.last_seq, row.progress) == (execution.last_seq + 5, 0.5)


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(store: SQLStore) -> None:
    execution = new_execution(store)
    statement = prepare(_insert_event(), store.engine.dialect)
    naive = _event(execution.id, 2, occurred_at=datetime(2026, 3, 1, 10, 0))
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), store.engine.begin() as conn:
        execute_many(conn, statement, [_values(naive)])
    assert store.list_events(execution.id)[-1].seq == 1


def test_a_driver_error_is_sqlalchemys_error_and_the_transaction_is_undone(
    store: SQLStore,
) -> None:
    execution = new_execution(store)
    statement = prepare(_insert_event(), store.engine.dialect)
    duplicate = [_values(_event(execution.id, 2)), _values(_event(execution.id, 2))]
    with pytest.raises(sa.exc.IntegrityError) as raised, store.engine.begin() as conn:
        execute_many(conn, statement, duplicate)
    assert "INSERT INTO events" in str(raised.value)
    assert [event.seq for event in store.list_events(execution.id)] == [1]


def test_statement_listeners_see_prepared_statements(store: SQLStore) -> None:
    execution = new_execution(store)
    statement = prepare(_insert_event(), store.engine.dialect)
    seen: list[tuple[str, bool]] = []

    def record(*args: Any) -> None:
        _conn, _cursor, sql, _parameters, _context, many = args
        seen.append((sql, many))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        with store.engine.begin() as conn:
            execute_many(conn, statement, [_values(_event(execution.id, 2))])
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert (statement.sql, False) in seen


def test_statements_with_expanding_lists_cannot_be_prepared(store: SQLStore) -> None:
    query = sa.select(executions).where(executions.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    with pytest.raises(ValueError, match=r"expanding parameters \['b_ids'\]"):
        prepare(query, store.engine.dialect)


@pytest.mark.postgres
def test_postgresql_connection_killed_while_warm_fails_one_prepared_statement_only(
    postgres_admin: sa.Engine,
) -> None:
    engine = sa.create_engine(postgres_admin.url)
    statement = prepare(sa.select(sa.func.pg_backend_pid()), engine.dialect)
    try:
        with engine.connect() as conn:
            [(backend,)] = execute_many(conn, statement, [{}])
        with postgres_admin.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(sa.exc.OperationalError) as raised, engine.connect() as conn:
            execute_many(conn, statement, [{}])
        assert raised.value.connection_invalidated
        with engine.connect() as conn:  # the pool dropped the dead connection
            [(again,)] = execute_many(conn, statement, [{}])
        assert again != backend
    finally:
        engine.dispose()

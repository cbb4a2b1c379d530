"""Hot-path statements compiled once per database and run on the driver's own cursor.

SQLAlchemy Core costs about 55 µs of Python per executed statement even when the compiled form
comes from its cache (execution context, result set-up, parameter processing), against 10-15 µs
for the driver's cursor (docs/performance.md). A worker writes 8 to 10 statements per step, so
the statements of the hot path are compiled here once per dialect into their SQL text, their
parameters' converters and their columns' converters, and run straight on the cursor of the
connection that SQLAlchemy holds: inside SQLAlchemy's transaction, with its type conversions
(aware UTC datetimes, enums as values, JSON), its error wrapping and disconnect handling, and its
``before_cursor_execute`` event, so counting statements still sees them.

Only statements without expanding parameters (``IN`` lists of variable length) can be prepared.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

Converter = Callable[[Any], Any]


@dataclasses.dataclass(slots=True)
class Prepared:
    """A statement compiled for one database: its text and how to bind and read it."""

    sql: str
    #: Whether the driver takes the parameters by position (sqlite3) or by name (psycopg).
    positional: bool
    #: Values the statement carries itself (literals such as the ``1`` of ``last_seq + 1``, or
    #: the new status of a compare-and-set), converted for the driver once.
    fixed: Mapping[str, Any]
    #: Each parameter the caller gives, with its converter (``None``: taken as is).
    binders: tuple[tuple[str, Converter | None], ...]
    #: The parameters' names in the driver's order (positional; a name may come twice).
    order: tuple[str, ...]
    #: The rows' type, or ``None`` for a statement that returns none.
    row: type[Any] | None
    types: tuple[sa.types.TypeEngine[Any], ...]
    #: The columns that need converting (position, converter), known from the driver's
    #: description of the first result.
    readers: tuple[tuple[int, Converter], ...] | None = None

    def parameters(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters for ``params`` (plus the statement's own values)."""
        converted = dict(self.fixed)
        for name, bind in self.binders:
            converted[name] = params[name] if bind is None else bind(params[name])
        return [converted[n] for n in self.order] if self.positional else converted

    def rows(self, raw: Sequence[Sequence[Any]], cursor: Any, dialect: sa.Dialect) -> list[Any]:
        """The driver's rows as named tuples of converted values."""
        assert self.row is not None
        if self.readers is None:
            processors = (
                kind.dialect_impl(dialect).result_processor(dialect, described[1])
                for kind, described in zip(self.types, cursor.description, strict=True)
            )
            self.readers = tuple((i, read) for i, read in enumerate(processors) if read is not None)
        make, readers = self.row._make, self.readers
        rows = []
        for row in raw:
            values = list(row)
            for i, read in readers:
                values[i] = read(values[i])
            rows.append(make(values))
        return rows


def prepare(statement: sa.ClauseElement, dialect: sa.Dialect) -> Prepared:
    """Compile ``statement`` for ``dialect`` once, with everything needed to run it raw."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    expanding = [name for name, bind in binds.items() if bind.expanding]
    if expanding:
        raise ValueError(f"cannot prepare a statement with expanding parameters {expanding}")
    if compiled.escaped_bind_names:
        raise ValueError(f"cannot prepare {compiled.string!r}: its parameter names need escaping")
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(binds)
    converters = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in binds.items()
    }
    fixed = {
        name: _converted(converters[name], bind.effective_value)
        for name, bind in binds.items()
        if not bind.required
    }
    binders = tuple((name, converters[name]) for name, bind in binds.items() if bind.required)
    columns: list[sa.ColumnElement[Any]] = list(getattr(statement, "exported_columns", ()))
    fields = [str(column.key) for column in columns]
    row = collections.namedtuple("Row", fields, rename=True) if columns else None
    types = tuple(column.type for column in columns)
    return Prepared(compiled.string, positional, fixed, binders, names, row, types)


def _converted(convert: Converter | None, value: Any) -> Any:
    return value if convert is None else convert(value)


def execute_many(
    conn: sa.Connection, prepared: Prepared, many: Sequence[Mapping[str, Any]]
) -> list[Any]:
    """Run ``prepared`` once per parameter set in ``conn``'s transaction; all rows returned, in
    order (``[]`` for a statement that returns none).

    Several sets go to the driver's ``executemany`` when it can return rows from it (psycopg
    sends them in one pipeline) or none are wanted; sqlite3 runs each in turn (in-process).
    """
    cursor: Any = conn.connection.cursor()  # the driver's own: psycopg's takes returning=
    returns = prepared.row is not None
    together = len(many) > 1 and (not returns or conn.dialect.driver == "psycopg")
    raw: list[Any] = []
    values: Any = None
    try:
        if together:
            values = [prepared.parameters(params) for params in many]
            _announce(conn, cursor, prepared, values, many=True)
            if returns:
                cursor.executemany(prepared.sql, values, returning=True)
                raw += cursor.fetchall()
                while cursor.nextset():
                    raw += cursor.fetchall()
            else:
                cursor.executemany(prepared.sql, values)
        else:
            for params in many:
                values = prepared.parameters(params)
                _announce(conn, cursor, prepared, values, many=False)
                cursor.execute(prepared.sql, values)
                if returns:
                    raw += cursor.fetchall()
        return prepared.rows(raw, cursor, conn.dialect) if returns else []
    except Exception as exc:
        # SQLAlchemy's own handling: wrapped in DBAPIError, a lost server connection invalidated.
        conn._handle_dbapi_exception(exc, prepared.sql, values, cursor, None)
    finally:
        cursor.close()


def _announce(
    conn: sa.Connection, cursor: Any, prepared: Prepared, values: Any, many: bool
) -> None:
    """SQLAlchemy's ``before_cursor_execute`` event, for those who count statements."""
    if conn.dispatch.before_cursor_execute:
        conn.dispatch.before_cursor_execute(conn, cursor, prepared.sql, values, None, many)

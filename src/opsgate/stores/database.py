"""Engines for the two supported databases, and the translation of their failures.

SQLite is the single-node default: WAL so readers never wait for the writer, ``synchronous=FULL``
so a commit survives a power cut, a busy timeout instead of instant ``database is locked``
errors, enforced foreign keys, and write transactions that take the write lock at ``BEGIN``
(``BEGIN IMMEDIATE``) so that two writers queue up instead of failing halfway through.
PostgreSQL is the multi-replica store, reached through psycopg 3. A pooled connection is checked
with a ping only when it sat idle for a while (:data:`IDLE_PING_SECONDS`), not on every checkout:
the worker's hot path makes no extra round trip, and a server that went away between two
transactions fails one of them, which the worker retries (its writes are compare-and-sets).

Every SQLAlchemy failure that reaches a caller passes through :func:`store_error` first, so the
message says what to check instead of showing a driver traceback.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)

from opsgate.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 5000
#: A PostgreSQL connection idle for longer than this is pinged before use (and replaced if dead).
IDLE_PING_SECONDS = 10.0
URL_HINT = "write sqlite:///path/to/opsgate.db or postgresql+psycopg://user@host:5432/database"
#: Execution option that makes a SQLite transaction read-only: ``BEGIN DEFERRED``, no write lock.
READ_ONLY = "opsgate_read_only"
#: Set by :func:`not_waiting`.
NOT_WAITING: ContextVar[bool] = ContextVar("opsgate_not_waiting", default=False)
_UNDEFINED_TABLE = "42P01"  # PostgreSQL SQLSTATE
#: In a connection's info: its busy timeout is 0 already (a kept connection).
_NO_WAIT = "opsgate_no_wait"


def create_engine_for(url: str) -> Engine:
    """An engine for ``url`` that has connected once, so a wrong set-up fails at start-up."""
    parsed = _parse(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        _create_parent_directory(parsed)
        options: dict[str, Any] = {}
    else:
        options = {"connect_args": {"connect_timeout": 10}}
    try:
        engine = sa.create_engine(parsed, **options)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(f"unusable database URL {_redacted(parsed)}: {exc}; {URL_HINT}") from exc
    if sqlite:
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
    else:
        _ping_when_idle(engine)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        raise store_error(exc, engine) from exc
    return engine


def store_error(exc: DBAPIError, engine: Engine) -> StoreError:
    """A :class:`StoreError` for a driver failure, saying what to check."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    sqlite = engine.dialect.name == "sqlite"
    if "no such table" in detail or getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE:
        hint = "the database has no opsgate tables yet: run `opsgate db upgrade`"
    elif "database is locked" in detail:
        hint = (
            f"another process held the SQLite write lock for over {SQLITE_BUSY_TIMEOUT_MS} ms; "
            "retry, and use PostgreSQL when several processes write at once"
        )
    elif isinstance(exc, IntegrityError):
        hint = (
            "a database constraint refused the change, so nothing was written; the stored "
            "records disagree with what opsgate expected: report this with the message"
        )
    elif sqlite and isinstance(exc, OperationalError):
        hint = "check that the SQLite file and its directory exist and are readable and writable"
    elif exc.connection_invalidated or isinstance(exc, OperationalError):
        hint = (
            "check that the database server is running and reachable, and that "
            "OPSGATE_DATABASE_URL names the right host, port, user, password and database"
        )
    else:
        hint = "the database refused the statement; run `opsgate db upgrade` if the schema is old"
    return StoreError(f"database {_redacted(engine.url)}: {detail}; {hint}")


def _redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"OPSGATE_DATABASE_URL {url!r} is not a database URL: {URL_HINT}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        # psycopg 3 is the installed driver; a plain postgresql:// would look for psycopg2.
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreError(f"OPSGATE_DATABASE_URL {url!r} names no SQLite file: {URL_HINT}")
        return parsed.set(database=str(Path(parsed.database).expanduser()))
    raise StoreError(f"unsupported database {backend!r} in OPSGATE_DATABASE_URL: {URL_HINT}")


def _create_parent_directory(url: URL) -> None:
    assert url.database is not None
    directory = Path(url.database).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {directory} for the SQLite database: {exc}") from exc


def _configure_sqlite_connection(dbapi_connection: Any, _record: object) -> None:
    # Let SQLAlchemy's begin event issue BEGIN, instead of pysqlite's own deferred handling.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Switch a new database file to WAL, waiting out a process that is switching it too.

    WAL is a property of the file, so once any connection has switched it this is a no-op read.
    The switch itself needs an exclusive lock for which SQLite does not always call the busy
    handler: two processes opening a fresh file at once would otherwise see "database is locked".
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only if it was idle longer than IDLE_PING_SECONDS."""

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is not None and time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out a fresh one.
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checkout)


class KeptConnections:
    """The SQLite connection that each event-loop thread keeps for its calls under
    :func:`not_waiting`, with a busy timeout of 0 for good.

    Checking a connection out of the pool and back in cost about 40 µs per transaction, a tenth
    of a step transition (docs/performance.md). Only calls on an event loop keep one (one or two
    threads per process), so the pool's other connections stay free for the worker threads.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._all: list[sa.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sa.Connection | None:
        """This thread's kept connection, if the call may use one: on SQLite, under
        :func:`not_waiting`, and not already inside a transaction on it."""
        if not NOT_WAITING.get() or self._engine.dialect.name != "sqlite":
            return None
        conn: sa.Connection | None = getattr(self._local, "connection", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect()
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA busy_timeout=0")  # on the driver: no autobegin
            conn.info[_NO_WAIT] = True
            self._local.connection = conn
            with self._lock:
                self._all.append(conn)
        return None if conn.in_transaction() else conn

    def close(self) -> None:
        """Close every kept connection (a thread may keep one it no longer uses)."""
        with self._lock:
            kept, self._all = self._all, []
        for conn in kept:
            conn.invalidate()  # closed, not returned to the pool with its busy timeout of 0
            conn.close()


def _begin_sqlite_transaction(connection: sa.Connection) -> None:
    """``BEGIN DEFERRED`` for a read-only transaction, else ``BEGIN IMMEDIATE``.

    Sent on the driver's connection (SQLAlchemy's ``exec_driver_sql`` cost 40 µs more per
    transaction), its failure wrapped as SQLAlchemy would (``database is locked`` becomes an
    ``OperationalError``).
    """
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    statement = "BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE"
    driver = connection.connection.driver_connection
    assert driver is not None
    # Under not_waiting(), take the write lock now or fail at once instead of waiting up to the
    # busy timeout: the caller runs on the event loop and waits in a thread instead.
    no_wait = not read_only and NOT_WAITING.get() and not connection.info.get(_NO_WAIT)
    try:
        if no_wait:
            driver.execute("PRAGMA busy_timeout=0")
        try:
            driver.execute(statement)
        finally:
            if no_wait:
                driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        connection._handle_dbapi_exception(exc, statement, (), None, None)


@contextmanager
def not_waiting() -> Iterator[None]:
    """SQLite write transactions begun inside fail at once when another connection holds the
    write lock, instead of waiting for it (see :func:`_begin_sqlite_transaction`)."""
    token = NOT_WAITING.set(True)
    try:
        yield
    finally:
        NOT_WAITING.reset(token)

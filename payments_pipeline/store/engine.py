"""Engines, transactions and deadlock retries; the one-row UPDATE check."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, event
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")

# --- engines -----------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """Map bare scheme names onto the drivers we ship (psycopg 3, PyMySQL)."""
    for bare, full in (
        ("postgres://", "postgresql+psycopg://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mariadb+pymysql://"),
    ):
        if url.startswith(bare):
            return full + url[len(bare) :]
    return url


def make_engine(
    url: str, *, idle_in_transaction_timeout: dt.timedelta | None = None, **kwargs: Any
) -> Engine:
    """An engine set up for our claims on each backend.

    SQLite: WAL, a busy timeout, and `BEGIN IMMEDIATE` so a transaction takes the write lock before
    it reads (two deferred transactions that both read then write would deadlock with
    "database is locked"). MySQL/MariaDB: READ COMMITTED, so range conditions take no gap locks.

    `idle_in_transaction_timeout` (engines that process events: pass the processing timeout): the
    server ends a session left idle inside a transaction that long, rolling it back. A worker hung
    mid-handler (its effect written, not committed) otherwise keeps its row locks until it wakes,
    and the sweep's attempt at the same event, reclaimed after that same timeout, waits on them.
    The fence already makes the hung attempt's work void; this releases its locks when it becomes
    reclaimable. PostgreSQL: `idle_in_transaction_session_timeout`; MariaDB:
    `idle_transaction_timeout`; MySQL and SQLite have no such setting (SQLite has one writer and
    no server to hang on).
    """
    url = normalize_url(url)
    backend = sa.make_url(url).get_backend_name()
    if backend == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 60)
    elif backend in {"mysql", "mariadb"}:
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    kwargs.setdefault("pool_pre_ping", True)
    # Bound parameters are payloads and secrets: never part of an exception message or a log.
    kwargs.setdefault("hide_parameters", True)
    engine = sa.create_engine(url, **kwargs)
    if backend == "sqlite":
        _configure_sqlite(engine)
    elif idle_in_transaction_timeout is not None:
        _end_idle_transactions(engine, idle_in_transaction_timeout)
    return engine


def _end_idle_transactions(engine: Engine, timeout: dt.timedelta) -> None:
    seconds = max(1, int(timeout.total_seconds()))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if engine.dialect.name == "postgresql":
            sql = f"SET idle_in_transaction_session_timeout = {seconds * 1000}"
        elif "MariaDB" in str(getattr(dbapi_connection, "get_server_info", str)()):
            sql = f"SET SESSION idle_transaction_timeout = {seconds}"
        else:  # MySQL proper has no such variable
            return
        cursor = dbapi_connection.cursor()
        cursor.execute(sql)
        cursor.close()
        dbapi_connection.commit()  # end the transaction the driver may have opened for the SET


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def changed_one(
    conn: Connection, stmt: sa.Executable, params: dict[str, Any] | None = None
) -> bool:
    """Run a conditional UPDATE; True when it changed exactly the one row it is about (the
    caller won), False when the condition no longer held (someone else did, or nothing to do)."""
    return bool(conn.execute(stmt, params).rowcount == 1)


def _is_mysql(conn: Connection) -> bool:
    return conn.dialect.name in {"mysql", "mariadb"}


_MYSQL_DUPLICATE_KEY = 1062


def _insert_if_absent(conn: Connection, table: sa.Table, values: dict[str, Any]) -> int | None:
    """INSERT that does nothing when a unique key already exists; the new id, or None.

    Never read-then-insert. PostgreSQL and SQLite: ON CONFLICT DO NOTHING. MySQL/MariaDB: a plain
    INSERT whose duplicate-key error (1062) is caught: InnoDB rolls back only that statement.
    (ON DUPLICATE KEY UPDATE cannot be used: with CLIENT_FOUND_ROWS, which SQLAlchemy always sets,
    a no-op duplicate reports 1 row like an insert; INSERT IGNORE would also swallow data errors.)
    """
    name = conn.dialect.name
    stmt = _insert_if_absent_statement(name, table)
    if name in {"mysql", "mariadb"}:
        try:
            result = conn.execute(stmt, values)
        except sa.exc.IntegrityError as exc:
            if getattr(exc.orig, "args", (None,))[0] == _MYSQL_DUPLICATE_KEY:
                return None
            raise
        return int(result.lastrowid)
    return conn.execute(stmt, values).scalar()


@functools.cache
def _insert_if_absent_statement(dialect: str, table: sa.Table) -> Any:
    """The statement `_insert_if_absent` runs, built once per backend and table: the values go in
    as execution parameters, so a delivery does not rebuild and re-key an INSERT (the receiver's
    hot path; docs/PERFORMANCE.md, receiver section)."""
    if dialect in {"mysql", "mariadb"}:
        return sa.insert(table)
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:
        raise NotImplementedError(f"unsupported database backend {dialect!r}")
    # RETURNING rather than rowcount: with implicit RETURNING the drivers' rowcounts differ.
    return stmt.returning(table.c.id)


# --- transactions --------------------------------------------------------------------------------

# MySQL 1213 deadlock, 1205 lock wait timeout; PostgreSQL 40001 serialization, 40P01 deadlock.
_RETRYABLE_MYSQL = {1213, 1205}
_RETRYABLE_PG = {"40001", "40P01"}


def is_retryable(exc: BaseException) -> bool:
    """A transaction the database rolled back to break a lock cycle: safe to run again whole."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _RETRYABLE_PG:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _RETRYABLE_MYSQL


def in_transaction(engine: Engine, work: Callable[[Connection], T], *, attempts: int = 5) -> T:
    """Run `work` in one transaction, again from scratch if the database broke a deadlock."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except sa.exc.DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
    raise AssertionError("unreachable")

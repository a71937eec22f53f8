"""Engines, transactions and deadlock retries; the check of a one-row UPDATE."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from .backends import SUPPORTED, backend_for
from .backends.base import Basic

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
    url: str,
    *,
    idle_in_transaction_timeout: dt.timedelta | None = None,
    serial: bool = False,
    **kwargs: Any,
) -> Engine:
    """An engine set up for our claims on each backend (`backends`: SQLite's WAL, busy timeout
    and BEGIN IMMEDIATE; MySQL/MariaDB's READ COMMITTED).

    `idle_in_transaction_timeout` (engines that process events: pass the processing timeout): the
    server ends a session left idle inside a transaction that long, rolling it back. A worker hung
    mid-handler (its effect written, not committed) otherwise keeps its row locks until it wakes,
    and the sweep's attempt at the same event, reclaimed after that same timeout, waits on them.
    The fence already makes the hung attempt's work void; this releases its locks when it becomes
    reclaimable. PostgreSQL: `idle_in_transaction_session_timeout`; MariaDB:
    `idle_transaction_timeout`; MySQL and SQLite have no such setting (SQLite has one writer and
    no server to hang on).

    `serial` (the sensor's tick engine): no parallel plans (PostgreSQL); their worker start-up
    costs more than the small index-served queries of a tick.
    """
    url = normalize_url(url)
    name = sa.make_url(url).get_backend_name()
    # A database we do not support still gets its engine (`create_engine` judges the URL, and the
    # first statement says what is unsupported), with no set-up of ours.
    backend = backend_for(name) if name in SUPPORTED else Basic()
    backend.engine_options(kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    # Bound parameters are payloads and secrets: never part of an exception message or a log.
    kwargs.setdefault("hide_parameters", True)
    engine = sa.create_engine(url, **kwargs)
    backend.configure(
        engine, idle_in_transaction_timeout=idle_in_transaction_timeout, serial=serial
    )
    return engine


def changed_one(
    conn: Connection, stmt: sa.Executable, params: dict[str, Any] | None = None
) -> bool:
    """Run a conditional UPDATE; True when it changed exactly the one row it is about (the
    caller won), False when the condition no longer held (someone else did, or nothing to do)."""
    return bool(conn.execute(stmt, params).rowcount == 1)


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


def in_transaction(
    engine: Engine, work: Callable[[Connection], T], *, attempts: int = 5, flush: bool = True
) -> T:
    """Run `work` in one transaction, again from scratch if the database broke a deadlock.

    `flush=False` (a processing claim, nothing else): the commit returns without waiting for the
    write-ahead log to reach the disk, where the database allows it per transaction (PostgreSQL's
    `synchronous_commit = off`; elsewhere the commit is the usual one). Safe for a claim because
    whatever depends on it commits later with a flush, which writes the log up to and past the
    claim: an effect is never durable without its claim. A crash of the server in between loses
    the claim alone, and the event is where it was before it (the sweep finds it, as after a
    worker that died before committing its claim)."""
    statement = None if flush else backend_for(engine.dialect.name).unflushed_commit_statement()
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                if statement is not None:
                    conn.exec_driver_sql(statement)
                return work(conn)
        except sa.exc.DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
    raise AssertionError("unreachable")

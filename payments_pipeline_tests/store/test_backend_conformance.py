"""One conformance suite for every database backend (`store.backends`), run on each database the
`engine` fixture parametrises over: the same operations, the same assertions.

Every operation of a `Backend` (`base.Basic` and its overrides): insert-if-absent, the set-based
claim (and that it skips rows another transaction holds), the audit insert, and the engine set-up
it installs.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from payments_pipeline import store
from payments_pipeline.models import EventStatus, SweepOutcome, SweepReason, utcnow
from payments_pipeline.store.backends import Backend, backend_for
from payments_pipeline.store.backends.mysql import MySQL

from ..conftest import EventFactory
from ..helpers import ago

E = store.E


def _event_values(key: str) -> dict[str, object]:
    now = utcnow()
    return {
        "provider": "stripe",
        "provider_event_id": key,
        "event_type": "payment_intent.succeeded",
        "status": EventStatus.RECEIVED.value,
        "payload": "{}",
        "attempts": 0,
        "attempts_base": 0,
        "created_at": now,
        "updated_at": now,
    }


def _count(engine: Engine, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        )


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# --- which backend ---------------------------------------------------------------------------


def test_each_database_has_its_backend_once(engine: Engine) -> None:
    backend = backend_for(engine)
    expected = {
        "sqlite": "sqlite",
        "postgresql": "postgresql",
        "mysql": "mysql",
        "mariadb": "mysql",
    }
    assert backend.name == expected[engine.dialect.name]
    assert backend is backend_for(engine.dialect.name)  # cached: one instance per database
    with engine.connect() as conn:
        assert backend_for(conn) is backend
    assert isinstance(backend_for("mariadb"), MySQL)
    with pytest.raises(NotImplementedError, match="unsupported database backend 'nosuchdb'"):
        backend_for("nosuchdb")


# --- insert-if-absent ------------------------------------------------------------------------


@pytest.mark.parametrize("table", [store.webhook_events, store.payments], ids=lambda t: t.name)
def test_insert_if_absent_returns_a_new_id_then_none(engine: Engine, table: sa.Table) -> None:
    backend = backend_for(engine)
    if table is store.webhook_events:
        values = _event_values("evt_conformance")
        other = values | {"payload": '{"second": true}'}
        key = sa.and_(E.provider == "stripe", E.provider_event_id == "evt_conformance")
    else:
        now = utcnow()
        values = {"provider": "stripe", "reference": "pi_c", "status": "pending"}
        values |= {"created_at": now, "updated_at": now}
        other = values | {"status": "succeeded"}
        key = sa.and_(table.c.provider == "stripe", table.c.reference == "pi_c")
    with engine.begin() as conn:
        first = backend.insert_if_absent(conn, table, values)
        # The duplicate in the same transaction: only that statement is undone, never the first.
        second = backend.insert_if_absent(conn, table, other)
    assert isinstance(first, int) and first > 0
    assert second is None
    assert _count(engine, table, key) == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(key)).one()
    assert row.id == first
    assert all(
        getattr(row, k) == v for k, v in values.items() if k not in {"created_at", "updated_at"}
    )
    with engine.begin() as conn:  # and in a transaction of its own
        assert backend.insert_if_absent(conn, table, other) is None
    assert _count(engine, table, key) == 1


def test_insert_if_absent_statement_is_built_once_per_table(engine: Engine) -> None:
    backend = backend_for(engine)
    events = backend.insert_if_absent_statement(store.webhook_events)
    assert backend.insert_if_absent_statement(store.webhook_events) is events
    assert backend.insert_if_absent_statement(store.payments) is not events


# --- the set-based claim ---------------------------------------------------------------------


def _lost(at: dt.datetime) -> sa.ColumnElement[bool]:
    """`dispatch_lost` as the sweep claims it: received, dispatched more than 10 minutes ago."""
    cutoffs = store.Cutoffs.at(at, stuck=dt.timedelta(minutes=10), stalled=dt.timedelta(minutes=30))
    return store.STUCK_REASONS[SweepReason.DISPATCH_LOST].condition(cutoffs)


def _claim(engine: Engine, backend: Backend, ids: list[int], at: dt.datetime) -> list[int]:
    with engine.begin() as conn:
        values = {"dispatched_at": at, "updated_at": at}
        return backend.update_ids_returning(conn, ids, _lost(at), values)


def test_claim_returns_exactly_the_ids_that_match(
    engine: Engine, event_factory: EventFactory
) -> None:
    backend = backend_for(engine)
    lost_a = event_factory(dispatched_at=ago(minutes=20))
    lost_b = event_factory(dispatched_at=ago(minutes=15))
    recent = event_factory(dispatched_at=ago(minutes=2))  # in the list, does not match
    failed = event_factory(status=EventStatus.FAILED, dispatched_at=ago(minutes=20))
    not_asked = event_factory(dispatched_at=ago(minutes=20))  # matches, not in the list
    at = utcnow()
    won = _claim(engine, backend, [recent, lost_b, failed, lost_a], at)
    assert won == sorted([lost_a, lost_b])
    with engine.connect() as conn:
        stamped = dict(conn.execute(sa.select(E.id, E.dispatched_at)).all())
    assert stamped[lost_a] == stamped[lost_b] == at
    assert all(stamped[i] < at - dt.timedelta(minutes=1) for i in (recent, failed, not_asked))
    # The claimed rows no longer match: a second claim of the same ids wins nothing.
    assert _claim(engine, backend, [recent, lost_b, failed, lost_a], utcnow()) == []


@pytest.fixture
def holder(engine: Engine) -> Iterator[Connection]:
    """A second real connection, for a transaction left open while the test claims."""
    conn = engine.connect()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _bounded_lock_waits(conn: Connection) -> None:
    """Make a claim that waits on a lock (instead of skipping it) fail in seconds, not hang."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
    else:
        conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 5")


def test_claim_skips_rows_another_transaction_holds(
    engine: Engine, event_factory: EventFactory, holder: Connection
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip(
            "SQLite has no row locks: BEGIN IMMEDIATE lets one writer in at a time, so a claim "
            "never runs beside another open write transaction and there is no held row to skip"
        )
    backend = backend_for(engine)
    held = event_factory(dispatched_at=ago(minutes=20))
    free = event_factory(dispatched_at=ago(minutes=20))
    holder.begin()
    holder.execute(sa.select(E.id).where(E.id == held).with_for_update()).all()
    at = utcnow()
    with engine.connect() as conn:
        try:
            with conn.begin():
                _bounded_lock_waits(conn)
                won = backend.update_ids_returning(
                    conn, [held, free], _lost(at), {"dispatched_at": at, "updated_at": at}
                )
        finally:
            conn.invalidate()  # the session setting stays out of the pool
    assert won == [free]
    holder.rollback()  # the lock is gone: the row is claimable again
    assert _claim(engine, backend, [held, free], utcnow()) == [held]


# --- the audit insert ------------------------------------------------------------------------


def _sweep(conn: Connection) -> int:
    return store.insert_sweep_run(
        conn, started_at=utcnow(), trigger="manual", dagster_run_id=None, minutes=10, provider="all"
    )


def test_audit_insert_writes_exactly_the_rows_given(engine: Engine) -> None:
    backend = backend_for(engine)
    outcomes = list(SweepOutcome)
    rows = [
        (
            event_id,
            "replay" if event_id % 7 == 0 else str(SweepReason.DISPATCH_LOST),
            outcomes[event_id % len(outcomes)],
        )
        for event_id in range(1, 1_201)
    ]
    with engine.begin() as conn:
        other = _sweep(conn)
        backend.insert_sweep_events(conn, sweep_id=other, rows=rows[:3])
        sweep_id = _sweep(conn)
        backend.insert_sweep_events(conn, sweep_id=sweep_id, rows=rows)
    with engine.connect() as conn:
        written = conn.execute(
            sa.select(store.sweep_events).where(store.sweep_events.c.sweep_id == sweep_id)
        ).all()
    assert len(written) == len(rows)
    assert {(r.event_id, r.reason, r.outcome) for r in written} == {
        (i, reason, outcome.value) for i, reason, outcome in rows
    }
    assert _count(engine, store.sweep_events) == len(rows) + 3
    # (sweep_id, event_id) is the key: the same event twice in one sweep is refused.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        backend.insert_sweep_events(conn, sweep_id=sweep_id, rows=[rows[5]])
    assert _count(engine, store.sweep_events) == len(rows) + 3


# --- unflushed commits (a processing claim) --------------------------------------------------


def test_an_unflushed_transaction_commits_its_work_and_leaves_the_next_one_flushed(
    engine: Engine,
) -> None:
    """`in_transaction(flush=False)`: the work commits like any other (a second connection reads
    it); on PostgreSQL that one transaction runs with `synchronous_commit = off` and the setting
    ends with it (SET LOCAL), so the pooled connection's next transaction flushes again."""
    settings: list[object] = []

    def claim(conn: Connection) -> int | None:
        if engine.dialect.name == "postgresql":
            settings.append(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
        return backend_for(conn).insert_if_absent(conn, store.webhook_events, _event_values("uf"))

    new_id = store.in_transaction(engine, claim, flush=False)
    assert new_id is not None
    assert _count(engine, store.webhook_events, E.id == new_id) == 1
    if engine.dialect.name == "postgresql":
        assert settings == ["off"]
        with engine.begin() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        assert backend_for(engine).unflushed_commit_statement() is not None
    else:  # MySQL's setting is server-wide, SQLite's per connection: the commit is the usual one
        assert backend_for(engine).unflushed_commit_statement() is None


# --- engine set-up ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgresql_sets_the_idle_in_transaction_timeout(engine: Engine) -> None:
    timed = store.make_engine(_url(engine), idle_in_transaction_timeout=dt.timedelta(seconds=7))
    plain = store.make_engine(_url(engine))
    try:
        with timed.connect() as conn:
            assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "7s"
        with plain.connect() as conn:
            assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "0"
    finally:
        timed.dispose()
        plain.dispose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgresql_serial_engines_make_no_parallel_plans(engine: Engine) -> None:
    serial = store.make_engine(_url(engine), serial=True)
    both = store.make_engine(
        _url(engine), serial=True, idle_in_transaction_timeout=dt.timedelta(seconds=7)
    )
    try:
        with serial.connect() as conn:
            assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() == "0"
        with both.connect() as conn:
            assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() == "0"
            assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "7s"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() != "0"
    finally:
        serial.dispose()
        both.dispose()


@pytest.mark.parametrize("backend", ["mysql"], indirect=True)
def test_mysql_reads_committed_and_mariadb_sets_the_idle_transaction_timeout(
    engine: Engine,
) -> None:
    timed = store.make_engine(_url(engine), idle_in_transaction_timeout=dt.timedelta(seconds=7))
    plain = store.make_engine(_url(engine))
    try:
        with timed.connect() as conn:
            assert conn.get_isolation_level() == "READ COMMITTED"
            mariadb = "MariaDB" in str(conn.exec_driver_sql("SELECT VERSION()").scalar())
            if mariadb:
                assert conn.exec_driver_sql("SELECT @@idle_transaction_timeout").scalar() == 7
        with plain.connect() as conn:
            assert conn.get_isolation_level() == "READ COMMITTED"
            if mariadb:
                assert conn.exec_driver_sql("SELECT @@idle_transaction_timeout").scalar() == 0
    finally:
        timed.dispose()
        plain.dispose()
    if not mariadb:  # MySQL proper has no such variable: nothing is set
        assert MySQL().idle_timeout_statement(object(), 7) is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_uses_wal_and_begins_immediate(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "setup.sqlite3"
    fresh = store.make_engine(f"sqlite:///{path}")
    try:
        with fresh.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.rollback()
            with conn.begin():
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with fresh.begin() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM t").scalar()  # a read, no write yet
            # BEGIN IMMEDIATE took the write lock at the start: another writer is refused now.
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # and this one writes
        with fresh.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    finally:
        fresh.dispose()
    memory = store.make_engine("sqlite://")  # no file, no WAL
    try:
        with memory.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
    finally:
        memory.dispose()

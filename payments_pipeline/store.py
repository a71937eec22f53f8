"""Table definitions and every SQL statement of the product (SQLAlchemy 2 Core).

Each function takes a `Connection` and keyword-only arguments and returns frozen rows or a decision
taken from a row count. Callers own the transaction (`engine.begin()`). Every state change that
decides who does the work is a conditional UPDATE whose WHERE repeats the condition it claims on, so
two callers can never both win: the database serialises them and the loser sees 0 rows.

Timestamps are naive UTC with microseconds, always bound from Python (`models.utcnow()`), never
`CURRENT_TIMESTAMP`: SQLite compares them as text, which is only ordered if every value has the same
format, and MariaDB needs `DATETIME(6)` to keep the microseconds.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, Engine, event, func
from sqlalchemy.dialects import mysql, postgresql, sqlite

from .models import (
    EventRef,
    EventStatus,
    Payment,
    PaymentStatus,
    Provider,
    SweepOutcome,
    SweepReason,
    SweepStatus,
    WebhookEvent,
)

T = TypeVar("T")

metadata = sa.MetaData()

# The longest provider key, event type and payment reference we store (the gate refuses longer).
KEY_LENGTH = 255

TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYLOAD = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("provider_event_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("event_type", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", PAYLOAD, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # attempts at the last replay: the retry budget is `attempts - attempts_base`, so `attempts`
    # (the fencing token) never goes down and a stale worker can never match a later attempt.
    sa.Column("attempts_base", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched_at", TS),
    sa.Column("processing_started_at", TS),
    sa.Column("processed_at", TS),
    sa.Column("next_attempt_at", TS),
    sa.Column("last_error", sa.String(500)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("provider", "provider_event_id", name="uq_webhook_events_provider_event"),
    sa.Index("ix_webhook_events_status_dispatched_at", "status", "dispatched_at"),
    sa.Index("ix_webhook_events_status_processing_started_at", "status", "processing_started_at"),
    sa.Index("ix_webhook_events_created_at", "created_at"),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(8)),
    sa.Column("last_event_id", ID),
    sa.Column("last_event_at", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("provider", "reference", name="uq_payments_provider_reference"),
)

# One row per effect applied to `payments`; the unique event id makes a second application of the
# same event impossible even if every other guard failed, and gives the soak its proof.
payment_ledger = sa.Table(
    "payment_ledger",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("webhook_event_id", ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("applied_at", TS, nullable=False),
    sa.UniqueConstraint("webhook_event_id", name="uq_payment_ledger_event"),
)

sweep_runs = sa.Table(
    "sweep_runs",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("minutes", sa.Integer, nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("scanned", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.String(500)),
    sa.Index("ix_sweep_runs_started_at", "started_at"),
)

# One row per event a sweep (or replay) touched. Keyed by (sweep_id, event_id): a sweep sees an
# event once, and a surrogate id would be one more index to write per audited event.
sweep_events = sa.Table(
    "sweep_events",
    metadata,
    sa.Column("sweep_id", ID, sa.ForeignKey("sweep_runs.id"), primary_key=True),
    sa.Column("event_id", ID, primary_key=True, autoincrement=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Index("ix_sweep_events_event_id", "event_id"),
)

E = webhook_events.c


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


# --- webhook events: reading ---------------------------------------------------------------------


def _event_from_row(row: Any) -> WebhookEvent:
    return WebhookEvent(
        id=row.id,
        provider=Provider(row.provider),
        provider_event_id=row.provider_event_id,
        event_type=row.event_type,
        status=EventStatus(row.status),
        payload=row.payload,
        attempts=row.attempts,
        attempts_base=row.attempts_base,
        dispatched_at=row.dispatched_at,
        processing_started_at=row.processing_started_at,
        processed_at=row.processed_at,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _ref_from_row(row: Any) -> EventRef:
    return EventRef(
        id=row.id,
        provider=Provider(row.provider),
        provider_event_id=row.provider_event_id,
        event_type=row.event_type,
    )


_REF_COLUMNS = (E.id, E.provider, E.provider_event_id, E.event_type)
_PROVIDER = {p.value: p for p in Provider}


def get_event(conn: Connection, *, event_id: int) -> WebhookEvent | None:
    """One event by id, payload included."""
    row = conn.execute(sa.select(webhook_events).where(E.id == event_id)).first()
    return _event_from_row(row) if row else None


def get_event_refs(conn: Connection, *, event_ids: Sequence[int]) -> list[EventRef]:
    """The loggable fields of several events, in id order."""
    if not event_ids:
        return []
    rows = conn.execute(sa.select(*_REF_COLUMNS).where(E.id.in_(event_ids)).order_by(E.id))
    return [_ref_from_row(r) for r in rows]


# --- the four stuck reasons ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cutoffs:
    """One look at the table: `now`, and the moments before which each wait is over (values, or
    bound parameters for a statement built once). `fresh_before` is None where an event never
    dispatched counts as stuck at once (the sweep); the sensor gives it a grace."""

    now: Any
    stuck_before: Any
    stalled_before: Any
    fresh_before: Any = None

    @classmethod
    def at(
        cls, now: Any, *, stuck: dt.timedelta, stalled: dt.timedelta, fresh: dt.timedelta
    ) -> Cutoffs:
        return cls(now, now - stuck, now - stalled, now - fresh)


@dataclass(frozen=True, eq=False)  # columns compare into SQL, not into a bool
class StuckReason:
    """One way an event gets stuck: it is in `status`, and its `clock` column was set before the
    cutoff named `waits_for` (a NULL clock counts as long ago when `null_is_old`); `requires` is a
    further fixed condition, and `after_backoff` waits for `next_attempt_at` too."""

    reason: SweepReason
    status: EventStatus
    clock: sa.Column[Any]
    waits_for: str
    requires: ColumnElement[bool] | None = None
    null_is_old: bool = False
    after_backoff: bool = False

    def condition(self, at: Cutoffs) -> ColumnElement[bool]:
        """Stuck for this reason at `at` (the scan's WHERE; the claim repeats it verbatim)."""
        terms = [E.status == self.status.value]
        before = getattr(at, self.waits_for)
        if before is not None:
            clock = self.clock
            terms.append(
                sa.or_(clock.is_(None), clock < before) if self.null_is_old else clock < before
            )
        if self.requires is not None:
            terms.append(self.requires)
        if self.after_backoff:
            terms.append(sa.or_(E.next_attempt_at.is_(None), E.next_attempt_at <= at.now))
        return sa.and_(*terms)

    def became_stuck(self, now: Cutoffs, since: Cutoffs | None) -> ColumnElement[bool]:
        """Stuck at `now` but not yet at `since` (every stuck row when `since` is None).

        A reason that only waits on its clock stays stuck once it is, so "not yet at `since`" is
        a lower bound on the same column: a range on the column an index leads with. A failed
        event can also become stuck when its backoff ends (few rows: every failed row waits one
        out), so its window is the plain difference of the two conditions.
        """
        stuck_now = self.condition(now)
        if since is None:
            return stuck_now
        since_before = getattr(since, self.waits_for)
        if not (self.null_is_old or self.after_backoff) and since_before is not None:
            return sa.and_(stuck_now, self.clock >= since_before)
        return sa.and_(stuck_now, sa.not_(self.condition(since)))


# `dispatched_at_null` waits only in the sensor (`fresh_before`, its grace): the gate inserts new
# events already claimed, but a row written unclaimed (older code, a bulk import, a hand fix) may be
# claimed in a moment by the gate's claim 1; the grace keeps the sensor from asking a sweep for it
# too early. The sweep takes such a row at once.
STUCK_REASONS: dict[SweepReason, StuckReason] = {
    r.reason: r
    for r in (
        StuckReason(
            SweepReason.DISPATCHED_AT_NULL,
            EventStatus.RECEIVED,
            clock=E.created_at,
            waits_for="fresh_before",
            requires=E.dispatched_at.is_(None),
        ),
        StuckReason(
            SweepReason.DISPATCH_LOST,
            EventStatus.RECEIVED,
            clock=E.dispatched_at,
            waits_for="stuck_before",
        ),
        # Failed, last dispatched before `stuck_before` (or never), its backoff over.
        StuckReason(
            SweepReason.FAILED_OLD,
            EventStatus.FAILED,
            clock=E.dispatched_at,
            waits_for="stuck_before",
            null_is_old=True,
            after_backoff=True,
        ),
        StuckReason(
            SweepReason.PROCESSING_STALLED,
            EventStatus.PROCESSING,
            clock=E.processing_started_at,
            waits_for="stalled_before",
        ),
    )
}
assert set(STUCK_REASONS) == set(SweepReason)


def stuck_condition(
    reason: SweepReason,
    *,
    now: dt.datetime,
    stuck_before: dt.datetime,
    stalled_before: dt.datetime,
) -> ColumnElement[bool]:
    """The WHERE clause of one sweep reason; the claim repeats it verbatim."""
    if reason not in STUCK_REASONS:
        raise ValueError(f"unknown sweep reason {reason!r}")
    return STUCK_REASONS[reason].condition(Cutoffs(now, stuck_before, stalled_before))


def any_stuck_condition(
    *, now: dt.datetime, stuck_before: dt.datetime, stalled_before: dt.datetime
) -> ColumnElement[bool]:
    """Stuck for any reason, as the sweep sees it (the status report's oldest stuck event)."""
    at = Cutoffs(now, stuck_before, stalled_before)
    return sa.or_(*(STUCK_REASONS[r].condition(at) for r in SweepReason))


# --- webhook events: the gate --------------------------------------------------------------------


def insert_event_if_new(
    conn: Connection,
    *,
    provider: Provider,
    provider_event_id: str,
    event_type: str,
    payload: str,
    now: dt.datetime,
    claim: bool = False,
) -> int | None:
    """Record a delivery unless (provider, provider_event_id) exists; the new id, or None.

    With `claim`, the row is inserted already dispatched (`dispatched_at = now`): the unique key
    lets exactly one inserter win, so the insert *is* claim 1 for a new event, in one statement.
    """
    return _insert_if_absent(
        conn,
        webhook_events,
        {
            "provider": provider.value,
            "provider_event_id": provider_event_id,
            "event_type": event_type,
            "status": EventStatus.RECEIVED.value,
            "payload": payload,
            "attempts": 0,
            "attempts_base": 0,
            "dispatched_at": now if claim else None,
            "created_at": now,
            "updated_at": now,
        },
    )


# The gate's duplicate path runs on every repeated delivery: its statements are built once, with
# bound parameters, like the INSERT of a new one (`_insert_if_absent_statement`).
_EVENT_STATE = sa.select(*_REF_COLUMNS, E.status).where(
    E.provider == sa.bindparam("provider"), E.provider_event_id == sa.bindparam("key")
)
_CLAIM_UNDISPATCHED = (
    sa.update(webhook_events)
    .where(
        E.id == sa.bindparam("event_id"),
        E.dispatched_at.is_(None),
        E.status != EventStatus.PROCESSED.value,
    )
    .values(dispatched_at=sa.bindparam("at"), updated_at=sa.bindparam("at"))
)


def get_event_state(
    conn: Connection, *, provider: Provider, provider_event_id: str
) -> tuple[EventRef, EventStatus] | None:
    """What the gate decides on for a duplicate delivery: id, type and status, not the payload."""
    params = {"provider": provider.value, "key": provider_event_id}
    row = conn.execute(_EVENT_STATE, params).first()
    if row is None:
        return None
    return EventRef(row[0], _PROVIDER[row[1]], row[2], row[3]), EventStatus(row[4])


def claim_undispatched(conn: Connection, *, event_id: int, now: dt.datetime) -> bool:
    """Gate claim 1: hand the event on only if nobody ever has (dispatched_at IS NULL)."""
    return changed_one(conn, _CLAIM_UNDISPATCHED, {"event_id": event_id, "at": now})


_CLAIM_FAILED = (
    sa.update(webhook_events)
    .where(
        E.id == sa.bindparam("event_id"),
        STUCK_REASONS[SweepReason.FAILED_OLD].condition(
            Cutoffs(sa.bindparam("at"), sa.bindparam("stuck_before"), None)
        ),
    )
    .values(dispatched_at=sa.bindparam("at"), updated_at=sa.bindparam("at"))
)


def claim_failed_for_redispatch(
    conn: Connection, *, event_id: int, now: dt.datetime, stuck_before: dt.datetime
) -> bool:
    """Gate claim 2: a failed event last dispatched before `stuck_before`, its backoff over."""
    params = {"event_id": event_id, "at": now, "stuck_before": stuck_before}
    return changed_one(conn, _CLAIM_FAILED, params)


# --- webhook events: processing ------------------------------------------------------------------

_CLAIMABLE = (EventStatus.RECEIVED.value, EventStatus.FAILED.value)


def _dispatched_since_last_attempt() -> ColumnElement[bool]:
    """No attempt yet, or a claim stamped `dispatched_at` after the last attempt started."""
    return sa.or_(E.processing_started_at.is_(None), E.processing_started_at < E.dispatched_at)


def claim_for_processing(
    conn: Connection, *, event_id: int, now: dt.datetime, max_attempts: int
) -> int | None:
    """Start an attempt; returns its number (the fencing token), None if someone else has it.

    Only an event handed on since its last attempt began can start one (`_dispatched_since`): a
    worker holding a stale batch, or a duplicate dispatch, cannot retry a failed event before a
    claim (gate claim 2, the sweep, a replay) has re-dispatched it, i.e. before its backoff.
    """
    started = changed_one(
        conn,
        sa.update(webhook_events)
        .where(
            E.id == event_id,
            E.status.in_(_CLAIMABLE),
            _dispatched_since_last_attempt(),
            E.attempts - E.attempts_base < max_attempts,
        )
        .values(
            status=EventStatus.PROCESSING.value,
            attempts=E.attempts + 1,
            processing_started_at=now,
            processed_at=None,
            updated_at=now,
        ),
    )
    if not started:
        return None
    # We hold the row lock until commit, so this reads our own attempt number.
    return int(conn.execute(sa.select(E.attempts).where(E.id == event_id)).scalar_one())


def mark_exhausted_dead(
    conn: Connection, *, event_id: int, now: dt.datetime, max_attempts: int
) -> bool:
    """Bury an event whose retry budget is spent without a recorded failure (worker crashes)."""
    return changed_one(
        conn,
        sa.update(webhook_events)
        .where(
            E.id == event_id,
            E.status.in_(_CLAIMABLE),
            _dispatched_since_last_attempt(),
            E.attempts - E.attempts_base >= max_attempts,
        )
        .values(
            status=EventStatus.DEAD.value,
            last_error=f"gave up after {max_attempts} attempts without completing",
            updated_at=now,
        ),
    )


def _fence(event_id: int, attempt: int) -> ColumnElement[bool]:
    return sa.and_(
        E.id == event_id, E.status == EventStatus.PROCESSING.value, E.attempts == attempt
    )


def mark_processed(conn: Connection, *, event_id: int, attempt: int, now: dt.datetime) -> bool:
    """Fenced: only the attempt that still owns the row may mark it processed."""
    return changed_one(
        conn,
        sa.update(webhook_events)
        .where(_fence(event_id, attempt))
        .values(
            status=EventStatus.PROCESSED.value,
            processed_at=now,
            next_attempt_at=None,
            last_error=None,
            updated_at=now,
        ),
    )


def mark_failed(
    conn: Connection,
    *,
    event_id: int,
    attempt: int,
    now: dt.datetime,
    error: str,
    next_attempt_at: dt.datetime | None,
    dead: bool,
) -> bool:
    """Fenced: record a failed attempt (`failed` with a backoff, or `dead`)."""
    return changed_one(
        conn,
        sa.update(webhook_events)
        .where(_fence(event_id, attempt))
        .values(
            status=(EventStatus.DEAD if dead else EventStatus.FAILED).value,
            last_error=error[:500],
            next_attempt_at=None if dead else next_attempt_at,
            updated_at=now,
        ),
    )


def requeue_for_replay(
    conn: Connection, *, event_ids: Sequence[int], now: dt.datetime
) -> list[int]:
    """Send `dead`/`processed` events round again: a fresh retry budget, dispatched now."""
    if not event_ids:
        return []
    cond = E.status.in_((EventStatus.DEAD.value, EventStatus.PROCESSED.value))
    values = {
        "status": EventStatus.RECEIVED.value,
        "attempts_base": E.attempts,
        "dispatched_at": now,
        "next_attempt_at": None,
        "last_error": None,
        "updated_at": now,
    }
    return _update_ids_returning(conn, event_ids, cond, values)


# --- webhook events: the sweep -------------------------------------------------------------------


def _claim_values(reason: SweepReason, now: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"dispatched_at": now, "updated_at": now}
    if reason is SweepReason.PROCESSING_STALLED:
        # Back to `received` in the same statement: the stale worker's fenced commit now finds
        # its attempt gone, and the next processing claim can take the row.
        values |= {"status": EventStatus.RECEIVED.value, "processing_started_at": None}
    return values


def select_stuck(
    conn: Connection,
    *,
    condition: ColumnElement[bool],
    providers: Sequence[Provider],
    created_after: dt.datetime,
) -> list[EventRef]:
    """Candidates of one reason inside the age window, in id order (the scan)."""
    rows = conn.execute(
        sa.select(*_REF_COLUMNS)
        .where(
            condition,
            E.provider.in_([p.value for p in providers]),
            E.created_at >= created_after,
        )
        .order_by(E.id)
    )
    # Plain tuples and a dict lookup: a sweep may scan 100,000 rows, and attribute access on
    # Row plus Provider(...) per row was most of the scan's time (cProfile).
    return [EventRef(i, _PROVIDER[p], key, t) for i, p, key, t in rows]


def count_expired(
    conn: Connection,
    *,
    conditions: Sequence[ColumnElement[bool]],
    providers: Sequence[Provider],
    created_after: dt.datetime,
) -> dict[Provider, int]:
    """Stuck rows older than the window, per provider: never touched, always counted."""
    rows = conn.execute(
        sa.select(E.provider, func.count())
        .where(
            sa.or_(*conditions),
            E.provider.in_([p.value for p in providers]),
            E.created_at < created_after,
        )
        .group_by(E.provider)
    )
    return {Provider(p): int(n) for p, n in rows}


def claim_stuck(
    conn: Connection,
    *,
    reason: SweepReason,
    event_ids: Sequence[int],
    condition: Any,
    now: dt.datetime,
) -> list[int]:
    """Claim a batch of candidates of one reason in one statement; returns the ids this call won.

    Rows locked by a concurrent claim are skipped (SKIP LOCKED), never waited on: the other sweep
    owns them. A row whose state moved since the scan no longer matches the repeated condition.
    """
    if not event_ids:
        return []
    return _update_ids_returning(conn, event_ids, condition, _claim_values(reason, now))


def _ids_array(name: str, ids: Sequence[int]) -> Any:
    """One PostgreSQL array parameter instead of one bound parameter per id."""
    return sa.bindparam(name, value=list(ids), type_=postgresql.ARRAY(sa.BigInteger))


def _update_ids_returning(
    conn: Connection,
    event_ids: Sequence[int],
    condition: ColumnElement[bool],
    values: dict[str, Any],
) -> list[int]:
    """UPDATE the rows among `event_ids` that match `condition` and that no concurrent
    transaction holds; return the ids updated. One claim, whatever the backend."""
    if conn.dialect.name == "postgresql":
        # The locking SELECT is a MATERIALIZED CTE over `id = ANY(array)`: one primary-key probe
        # per id. As `IN (SELECT ... FOR UPDATE SKIP LOCKED)` the planner misjudged the row count
        # and chose a nested-loop semi join that re-ran the subquery per row: 0.2 s per 2,000-id
        # batch, 6 s per 1,000-id batch (benchmarks/sweep_benchmark.py, EXPLAIN ANALYZE).
        locked = (
            sa.select(E.id)
            .where(E.id == sa.any_(_ids_array("claim_ids", event_ids)), condition)
            .with_for_update(skip_locked=True)
            .cte("locked")
            .prefix_with("MATERIALIZED")
        )
        result = conn.execute(
            sa.update(webhook_events)
            .where(E.id == locked.c.id, condition)
            .values(**values)
            .returning(E.id)
        )
        return sorted(result.scalars())
    if conn.dialect.name == "sqlite":
        # No row locks (and no FOR UPDATE): BEGIN IMMEDIATE already serialises SQLite's writers.
        result = conn.execute(
            sa.update(webhook_events)
            .where(E.id.in_(event_ids), condition)
            .values(**values)
            .returning(E.id)
        )
        return sorted(result.scalars())
    lock = sa.select(E.id).where(E.id.in_(event_ids), condition).with_for_update(skip_locked=True)
    if _is_mysql(conn):
        # MariaDB has no UPDATE ... RETURNING and refuses a subquery on the updated table: lock
        # the matching rows first, then update exactly those (still repeating the condition).
        # Through the primary key only: through a secondary index InnoDB also locks, for a moment,
        # rows it then filters out, and a concurrent sweep's SKIP LOCKED would skip rows that
        # nobody claims (seen in test_four_concurrent_sweeps_dispatch_each_event_once).
        by_pk = lock.with_hint(webhook_events, "FORCE INDEX (PRIMARY)", "mysql").with_hint(
            webhook_events, "FORCE INDEX (PRIMARY)", "mariadb"
        )
        ids = list(conn.execute(by_pk).scalars())
        if ids:
            conn.execute(sa.update(webhook_events).where(E.id.in_(ids), condition).values(**values))
        return sorted(ids)
    raise NotImplementedError(f"unsupported database backend {conn.dialect.name!r}")


# --- payments ------------------------------------------------------------------------------------

P = payments.c


def _payment_from_row(row: Any) -> Payment:
    return Payment(
        id=row.id,
        provider=Provider(row.provider),
        reference=row.reference,
        status=PaymentStatus(row.status),
        amount=row.amount,
        currency=row.currency,
        last_event_id=row.last_event_id,
        last_event_at=row.last_event_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def get_payment(conn: Connection, *, provider: Provider, reference: str) -> Payment | None:
    row = conn.execute(
        sa.select(payments).where(P.provider == provider.value, P.reference == reference)
    ).first()
    return _payment_from_row(row) if row else None


def list_payments(conn: Connection) -> list[Payment]:
    return [_payment_from_row(r) for r in conn.execute(sa.select(payments).order_by(P.id))]


def insert_payment_if_absent(
    conn: Connection,
    *,
    provider: Provider,
    reference: str,
    status: PaymentStatus,
    amount: int | None,
    currency: str | None,
    event_id: int,
    event_at: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """First event for a payment creates it; True when this call inserted."""
    return None is not _insert_if_absent(
        conn,
        payments,
        {
            "provider": provider.value,
            "reference": reference,
            "status": status.value,
            "amount": amount,
            "currency": currency,
            "last_event_id": event_id,
            "last_event_at": event_at,
            "created_at": now,
            "updated_at": now,
        },
    )


def update_payment_if_unchanged(
    conn: Connection,
    *,
    seen: Payment,
    status: PaymentStatus,
    amount: int | None,
    currency: str | None,
    event_id: int,
    event_at: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """Compare-and-set: apply only if the row still holds what the decision was made on."""
    unchanged = sa.and_(
        P.id == seen.id,
        P.status == seen.status.value,
        P.last_event_id.is_(None)
        if seen.last_event_id is None
        else P.last_event_id == seen.last_event_id,
    )
    return changed_one(
        conn,
        sa.update(payments)
        .where(unchanged)
        .values(
            status=status.value,
            amount=seen.amount if amount is None else amount,
            currency=seen.currency if currency is None else currency,
            last_event_id=event_id,
            last_event_at=event_at,
            updated_at=now,
        ),
    )


def insert_ledger_entry(
    conn: Connection,
    *,
    event_id: int,
    attempt: int,
    provider: Provider,
    reference: str,
    from_status: PaymentStatus | None,
    to_status: PaymentStatus,
    now: dt.datetime,
) -> None:
    """Record one applied effect; a second one for the same event violates the unique key."""
    conn.execute(
        sa.insert(payment_ledger).values(
            webhook_event_id=event_id,
            attempt=attempt,
            provider=provider.value,
            reference=reference,
            from_status=from_status.value if from_status else None,
            to_status=to_status.value,
            applied_at=now,
        )
    )


def ledger_has_event(conn: Connection, *, event_id: int) -> bool:
    row = conn.execute(
        sa.select(payment_ledger.c.id).where(payment_ledger.c.webhook_event_id == event_id)
    ).first()
    return row is not None


# --- sweep audit ---------------------------------------------------------------------------------


def insert_sweep_run(
    conn: Connection,
    *,
    started_at: dt.datetime,
    trigger: str,
    dagster_run_id: str | None,
    minutes: int,
    provider: str,
) -> int:
    result = conn.execute(
        sa.insert(sweep_runs).values(
            started_at=started_at,
            trigger=trigger,
            dagster_run_id=dagster_run_id,
            minutes=minutes,
            provider=provider,
            status=SweepStatus.RUNNING.value,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def finish_sweep_run(
    conn: Connection,
    *,
    sweep_id: int,
    finished_at: dt.datetime,
    status: SweepStatus,
    scanned: int = 0,
    dispatched: int = 0,
    skipped: int = 0,
    expired: int = 0,
    error: str | None = None,
) -> None:
    conn.execute(
        sa.update(sweep_runs)
        .where(sweep_runs.c.id == sweep_id)
        .values(
            finished_at=finished_at,
            status=status.value,
            scanned=scanned,
            dispatched=dispatched,
            skipped=skipped,
            expired=expired,
            error=None if error is None else error[:500],
        )
    )


def insert_sweep_events(
    conn: Connection, *, sweep_id: int, rows: Iterable[tuple[int, str, SweepOutcome]]
) -> None:
    """The per-event audit (reason: a `SweepReason` or `replay`), one statement per batch."""
    rows = list(rows)
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # One INSERT ... SELECT over unnest(arrays): executemany would send one row per statement.
        u = (
            sa.func.unnest(
                _ids_array("audit_ids", [i for i, _, _ in rows]),
                sa.bindparam(
                    "audit_reasons", [str(r) for _, r, _ in rows], postgresql.ARRAY(sa.Text)
                ),
                sa.bindparam(
                    "audit_outcomes", [o.value for _, _, o in rows], postgresql.ARRAY(sa.Text)
                ),
            )
            .table_valued("event_id", "reason", "outcome")
            .render_derived(name="audit")
        )
        conn.execute(
            sa.insert(sweep_events).from_select(
                ["sweep_id", "event_id", "reason", "outcome"],
                sa.select(
                    sa.literal(sweep_id, sa.BigInteger), u.c.event_id, u.c.reason, u.c.outcome
                ),
            )
        )
        return
    # PyMySQL folds an executemany INSERT into multi-row VALUES; SQLite runs it in-process.
    conn.execute(
        sa.insert(sweep_events),
        [
            {"sweep_id": sweep_id, "event_id": i, "reason": str(r), "outcome": o.value}
            for i, r, o in rows
        ],
    )


def set_sweep_event_outcome(
    conn: Connection, *, sweep_id: int, event_ids: Sequence[int], outcome: SweepOutcome
) -> None:
    if event_ids:
        conn.execute(
            sa.update(sweep_events)
            .where(sweep_events.c.sweep_id == sweep_id, sweep_events.c.event_id.in_(event_ids))
            .values(outcome=outcome.value)
        )


# --- status --------------------------------------------------------------------------------------


def count_by_provider_status(conn: Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        sa.select(E.provider, E.status, func.count()).group_by(E.provider, E.status)
    )
    return {(p, s): int(n) for p, s, n in rows}


def oldest_created_at(
    conn: Connection, *, condition: ColumnElement[bool]
) -> dict[str, dt.datetime]:
    """Per provider, the creation time of the oldest row matching `condition`."""
    rows = conn.execute(
        sa.select(E.provider, func.min(E.created_at)).where(condition).group_by(E.provider)
    )
    return {p: t for p, t in rows if t is not None}


def list_event_refs(
    conn: Connection, *, status: EventStatus, limit: int
) -> list[tuple[EventRef, str | None]]:
    rows = conn.execute(
        sa.select(*_REF_COLUMNS, E.last_error)
        .where(E.status == status.value)
        .order_by(E.id)
        .limit(limit)
    )
    return [(_ref_from_row(r), r.last_error) for r in rows]


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


def insert_events(conn: Connection, *, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk-insert event rows in any state (the demo, fixtures of benchmarks): one multi-row
    INSERT. Missing columns take the defaults of a fresh delivery."""
    if not rows:
        return
    now = rows[0].get("created_at")
    defaults = {
        "status": EventStatus.RECEIVED.value,
        "attempts": 0,
        "attempts_base": 0,
        "dispatched_at": None,
        "processing_started_at": None,
        "processed_at": None,
        "next_attempt_at": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(sa.insert(webhook_events), [defaults | row for row in rows])


# --- receiver ------------------------------------------------------------------------------------


def ping(conn: Connection) -> None:
    """Raise unless the database answers and holds our table (the receiver's /healthz).

    Reads no row: a database that accepts connections but was never migrated would fail every
    delivery, so it must not look healthy either.
    """
    conn.execute(sa.select(E.id).where(sa.false())).all()


# --- sensor --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckCount:
    """How many events of one provider became stuck for one reason, and the highest id."""

    provider: Provider
    reason: SweepReason
    count: int
    max_id: int


def count_newly_stuck(
    conn: Connection,
    *,
    now: dt.datetime,
    since: dt.datetime | None,
    minutes: int,
    timeout_minutes: int,
    created_after: dt.datetime,
    grace: dt.timedelta = dt.timedelta(minutes=1),
) -> list[StuckCount]:
    """Events that became stuck in `(since, now]` (every stuck one when `since` is None), per
    provider and reason: the sensor's one query, in one round trip.

    Each branch is a range on an index's leading columns ((status, dispatched_at),
    (status, processing_started_at)), so the cost follows the rows found, not the table.
    """
    wait, stalled = dt.timedelta(minutes=minutes), dt.timedelta(minutes=timeout_minutes)
    at_now = Cutoffs.at(now, stuck=wait, stalled=stalled, fresh=grace)
    at_since = (
        None if since is None else Cutoffs.at(since, stuck=wait, stalled=stalled, fresh=grace)
    )
    parts = [
        sa.select(
            sa.literal(reason.value, sa.String(32)).label("reason"),
            E.provider,
            func.count().label("n"),
            func.max(E.id).label("max_id"),
        )
        .where(
            STUCK_REASONS[reason].became_stuck(at_now, at_since),
            E.created_at >= created_after,
        )
        .group_by(E.provider)
        for reason in SweepReason
    ]
    return [
        StuckCount(Provider(row.provider), SweepReason(row.reason), int(row.n), int(row.max_id))
        for row in conn.execute(sa.union_all(*parts))
    ]


def count_dead_events(conn: Connection, *, providers: Sequence[Provider]) -> dict[Provider, int]:
    """Dead events per provider (a Dagster check); served by the indexes led by `status`."""
    rows = conn.execute(
        sa.select(E.provider, func.count())
        .where(E.status == EventStatus.DEAD.value, E.provider.in_([p.value for p in providers]))
        .group_by(E.provider)
    )
    return {Provider(p): int(n) for p, n in rows}


# --- worker --------------------------------------------------------------------------------------


def select_dispatched(conn: Connection, *, limit: int) -> list[int]:
    """Events handed on and not started since (the worker's queue), oldest hand-off first.

    `dispatched_at` newer than `processing_started_at` means a claim happened after the last
    attempt began: a first dispatch, a sweep's re-claim of a failed or stalled event, a replay.
    Served by the (status, dispatched_at) index; the processing claim decides who runs each.
    """
    rows = conn.execute(
        sa.select(E.id)
        .where(
            E.status.in_(_CLAIMABLE),
            E.dispatched_at.is_not(None),
            _dispatched_since_last_attempt(),
        )
        .order_by(E.dispatched_at)
        .limit(limit)
    )
    return list(rows.scalars())


def fail_running_sweep_of_dagster_run(
    conn: Connection, *, dagster_run_id: str, finished_at: dt.datetime, error: str
) -> bool:
    """Close the audit row of a Dagster run that died without closing it; False if none was open."""
    return changed_one(
        conn,
        sa.update(sweep_runs)
        .where(
            sweep_runs.c.dagster_run_id == dagster_run_id,
            sweep_runs.c.status == SweepStatus.RUNNING.value,
        )
        .values(finished_at=finished_at, status=SweepStatus.FAILED.value, error=error[:500]),
    )

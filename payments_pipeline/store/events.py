"""Webhook events: reads, the gate, processing claims and fences, replay, the worker's queue."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection

from ..models import (
    EventRef,
    EventStatus,
    Provider,
    ReceivedVia,
    SweepReason,
    WebhookEvent,
)
from ._rows import PROVIDERS, REF_COLUMNS, event_from_row, ref_from_row
from .backends import backend_for
from .engine import changed_one
from .schema import E, webhook_events
from .stuck import OPENS_AN_ATTEMPT, STUCK_REASONS, Cutoffs, expired


def get_event(conn: Connection, *, event_id: int) -> WebhookEvent | None:
    """One event by id, payload included."""
    row = conn.execute(sa.select(webhook_events).where(E.id == event_id)).first()
    return event_from_row(row) if row else None


def get_event_refs(conn: Connection, *, event_ids: Sequence[int]) -> list[EventRef]:
    """The loggable fields of several events, in id order."""
    if not event_ids:
        return []
    rows = conn.execute(sa.select(*REF_COLUMNS).where(E.id.in_(event_ids)).order_by(E.id))
    return [ref_from_row(r) for r in rows]


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
    received_via: ReceivedVia = ReceivedVia.WEBHOOK,
) -> int | None:
    """Record a delivery unless (provider, provider_event_id) exists; the new id, or None.

    With `claim`, the row is inserted already dispatched (`dispatched_at = now`): the unique key
    lets exactly one inserter win, so the insert *is* claim 1 for a new event, in one statement.
    `received_via` says how it came: a delivery, or a reconciliation's listing of the API.
    """
    return backend_for(conn).insert_if_absent(
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
            "received_via": received_via.value,
        },
    )


def known_provider_event_ids(
    conn: Connection, *, provider: Provider, provider_event_ids: Sequence[str]
) -> set[str]:
    """Which of `provider_event_ids` we already hold: one query on the unique key, for a page of
    a reconciliation's listing."""
    if not provider_event_ids:
        return set()
    rows = conn.execute(
        sa.select(E.provider_event_id).where(
            E.provider == provider.value, E.provider_event_id.in_(list(provider_event_ids))
        )
    )
    return set(rows.scalars())


# The gate's duplicate path runs on every repeated delivery: its statements are built once, with
# bound parameters, like the INSERT of a new one (`Backend.insert_if_absent_statement`).
_EVENT_STATE = sa.select(*REF_COLUMNS, E.status).where(
    E.provider == sa.bindparam("provider"), E.provider_event_id == sa.bindparam("key")
)
_CLAIM_UNDISPATCHED = (
    sa.update(webhook_events)
    .where(
        E.id == sa.bindparam("event_id"),
        E.dispatched_at.is_(None),
        # A settled event is never handed on again (a late duplicate of a dismissed one).
        E.status.not_in((EventStatus.PROCESSED.value, EventStatus.DISMISSED.value)),
    )
    .values(
        dispatched_at=sa.bindparam("at"),
        updated_at=sa.bindparam("at"),
        # A row being processed keeps its attempt's start (the sweep's stall clock).
        processing_started_at=sa.case(
            (E.status == EventStatus.PROCESSING.value, E.processing_started_at), else_=None
        ),
    )
)


def get_event_state(
    conn: Connection, *, provider: Provider, provider_event_id: str
) -> tuple[EventRef, EventStatus] | None:
    """What the gate decides on for a duplicate delivery: id, type and status, not the payload."""
    params = {"provider": provider.value, "key": provider_event_id}
    row = conn.execute(_EVENT_STATE, params).first()
    if row is None:
        return None
    return EventRef(row[0], PROVIDERS[row[1]], row[2], row[3]), EventStatus(row[4])


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
    .values(dispatched_at=sa.bindparam("at"), updated_at=sa.bindparam("at"), **OPENS_AN_ATTEMPT)
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
    """No attempt yet, or a claim handed the event on since the last attempt started: every claim
    that hands on a waiting event clears `processing_started_at` (`OPENS_AN_ATTEMPT`), and every
    attempt sets it, so the column is a state, not a clock.

    Comparing it with `dispatched_at` was not enough: the two stamps come from different clock
    readings, and a worker that read its clock, was descheduled, then claimed the event after a
    gate stamped a later `dispatched_at` left `processing_started_at < dispatched_at`: once that
    attempt failed, the next poll started another without any new dispatch (seen in the soak on a
    loaded machine: 2 attempts, 1 dispatch)."""
    return E.processing_started_at.is_(None)


def _awaits_attempt(event_id: int) -> ColumnElement[bool]:
    """The event, claimable, and handed on since its last attempt began: what both starting an
    attempt and burying an event whose budget is spent require."""
    return sa.and_(E.id == event_id, E.status.in_(_CLAIMABLE), _dispatched_since_last_attempt())


def _queued() -> ColumnElement[bool]:
    """Handed on and not started since: the table engine's queue (a claim stamped
    `dispatched_at` after the last attempt began, or there was no attempt yet)."""
    return sa.and_(
        E.status.in_(_CLAIMABLE), E.dispatched_at.is_not(None), _dispatched_since_last_attempt()
    )


# The retry budget counts from the last replay (`attempts_base`).
_attempts_used = E.attempts - E.attempts_base


def claim_for_processing(
    conn: Connection, *, event_id: int, now: dt.datetime, max_attempts: int
) -> WebhookEvent | None:
    """Start an attempt; returns the event as it now is (its `attempts` is the attempt number,
    the fencing token), None if someone else has it. One statement where the database has
    UPDATE ... RETURNING (`Backend.update_one_returning`): the claim, the attempt number and
    the payload in one round trip.

    Only an event handed on since its last attempt began can start one (`_dispatched_since`): a
    worker holding a stale batch, or a duplicate dispatch, cannot retry a failed event before a
    claim (gate claim 2, the sweep, a replay) has re-dispatched it, i.e. before its backoff.
    Unlike the set-based claims it waits on a row another transaction holds, then re-checks the
    condition: one event, no lock order to get wrong.
    """
    row = backend_for(conn).update_one_returning(
        conn,
        event_id,
        sa.and_(_awaits_attempt(event_id), _attempts_used < max_attempts),
        _starts_attempt(now),
    )
    return None if row is None else event_from_row(row)


def claim_events_for_processing(
    conn: Connection, *, event_ids: Sequence[int], now: dt.datetime, max_attempts: int
) -> list[WebhookEvent]:
    """Start an attempt on those of `event_ids` that await one, in one set-based conditional
    claim (a Celery message's ids); returns them as they now are, in id order (`attempts` is
    each one's fencing token). The others are someone else's (processed already, another
    attempt holds them, or a concurrent claim holds the row: skipped, never waited on)."""
    if not event_ids:
        return []
    ready = sa.and_(
        E.status.in_(_CLAIMABLE), _dispatched_since_last_attempt(), _attempts_used < max_attempts
    )
    rows = backend_for(conn).claim_ids(conn, sorted(set(event_ids)), ready, _starts_attempt(now))
    return sorted((event_from_row(r) for r in rows), key=lambda e: e.id)


def _starts_attempt(now: dt.datetime) -> dict[str, Any]:
    return {
        "status": EventStatus.PROCESSING.value,
        "attempts": E.attempts + 1,
        "processing_started_at": now,
        "processed_at": None,
        "updated_at": now,
    }


def claim_dispatched_batch(
    conn: Connection, *, limit: int, now: dt.datetime, max_attempts: int
) -> list[WebhookEvent]:
    """Start an attempt on up to `limit` dispatched events in one set-based claim; returns them
    as they are now (`attempts` is each one's new attempt number, its fencing token).

    Rows another transaction holds are skipped (SKIP LOCKED), so concurrent workers never take
    the same event, and the UPDATE repeats the condition, so a row that moved is not taken.
    """
    backend = backend_for(conn)
    rows: list[Any] = []
    # One status at a time, oldest hand-off first: `status = s ORDER BY dispatched_at` is a range
    # of the (status, dispatched_at) index read in order, so the claim's cost follows the rows it
    # takes. With `status IN (...)` and no order, the planner, seeing most rows `received` (a
    # large backlog just swept), chose a sequential scan that stepped over every row already
    # processed on each poll: a 100,000-event backlog drained at ~270 events/s and slowing.
    for status in _CLAIMABLE:
        ready = sa.and_(
            E.status == status,
            E.dispatched_at.is_not(None),
            _dispatched_since_last_attempt(),
            _attempts_used < max_attempts,
        )
        rows += backend.claim_batch(conn, ready, _starts_attempt(now), limit - len(rows))
        if len(rows) >= limit:
            break
    return sorted((event_from_row(r) for r in rows), key=lambda e: e.id)


def bury_exhausted(
    conn: Connection,
    *,
    now: dt.datetime,
    max_attempts: int,
    event_ids: Sequence[int] | None = None,
) -> list[int]:
    """Mark `dead` every dispatched event (among `event_ids`, when given) whose budget is spent
    without a recorded failure (its workers died mid-attempt); their ids."""
    spent = sa.and_(_queued(), _attempts_used >= max_attempts)
    query = sa.select(E.id).where(spent)
    if event_ids is not None:
        query = query.where(E.id.in_(list(event_ids)))
    ids = list(conn.execute(query).scalars())
    if not ids:
        return []
    return backend_for(conn).update_ids_returning(conn, ids, spent, _buried(max_attempts, now))


def _buried(max_attempts: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "status": EventStatus.DEAD.value,
        "last_error": f"gave up after {max_attempts} attempts without completing",
        "updated_at": now,
    }


def mark_exhausted_dead(
    conn: Connection, *, event_id: int, now: dt.datetime, max_attempts: int
) -> bool:
    """Bury an event whose retry budget is spent without a recorded failure (worker crashes)."""
    return changed_one(
        conn,
        sa.update(webhook_events)
        .where(_awaits_attempt(event_id), _attempts_used >= max_attempts)
        .values(**_buried(max_attempts, now)),
    )


def _fence(event_id: int, attempt: int) -> ColumnElement[bool]:
    return sa.and_(
        E.id == event_id, E.status == EventStatus.PROCESSING.value, E.attempts == attempt
    )


# Every processed event runs this: built once, with bound parameters (like the gate's statements).
_MARK_PROCESSED = (
    sa.update(webhook_events)
    .where(
        E.id == sa.bindparam("event_id"),
        E.status == EventStatus.PROCESSING.value,
        E.attempts == sa.bindparam("attempt"),
    )
    .values(
        status=EventStatus.PROCESSED.value,
        processed_at=sa.bindparam("at"),
        next_attempt_at=None,
        last_error=None,
        updated_at=sa.bindparam("at"),
    )
)


def mark_processed(conn: Connection, *, event_id: int, attempt: int, now: dt.datetime) -> bool:
    """Fenced (`_fence`, as bound parameters): only the attempt that still owns the row may mark
    it processed."""
    params = {"event_id": event_id, "attempt": attempt, "at": now}
    return changed_one(conn, _MARK_PROCESSED, params)


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
    conn: Connection,
    *,
    event_ids: Sequence[int],
    now: dt.datetime,
    expired_at: Cutoffs | None = None,
) -> list[int]:
    """Send `dead`/`processed` events (and those expired at `expired_at`: stuck events older than
    the sweeps' window, named by id) round again: a fresh retry budget, dispatched now. A stalled
    `processing` row goes back to `received`, so its stale worker's fenced commit finds it gone."""
    if not event_ids:
        return []
    cond: ColumnElement[bool] = E.status.in_((EventStatus.DEAD.value, EventStatus.PROCESSED.value))
    if expired_at is not None:
        cond = sa.or_(cond, expired(expired_at))
    values = {
        "status": EventStatus.RECEIVED.value,
        "attempts_base": E.attempts,
        "dispatched_at": now,
        "next_attempt_at": None,
        "last_error": None,
        "updated_at": now,
        **OPENS_AN_ATTEMPT,
    }
    return backend_for(conn).update_ids_returning(conn, event_ids, cond, values)


def dismiss(
    conn: Connection, *, event_ids: Sequence[int], expired_at: Cutoffs, now: dt.datetime
) -> list[int]:
    """Settle by hand the `dead` events and those expired at `expired_at` among `event_ids`: status
    `dismissed` (no effect, never swept), in one conditional UPDATE; the ids it changed. A row
    that moved meanwhile (a sweep, a replay, a worker) no longer matches and is left alone; a
    stalled worker's fenced commit finds its attempt gone. `last_error` stays: why it failed."""
    if not event_ids:
        return []
    cond = sa.or_(E.status == EventStatus.DEAD.value, expired(expired_at))
    values = {
        "status": EventStatus.DISMISSED.value,
        "next_attempt_at": None,
        "updated_at": now,
    }
    return backend_for(conn).update_ids_returning(conn, event_ids, cond, values)


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

"""Processing with exactly-once effects.

An attempt is two transactions:
1. `start_attempt`: claim `received|failed -> processing`, attempts+1. The new attempt number is the
   fencing token. Zero rows changed: someone else has the event; stop.
2. `complete_attempt`: run the handler, then mark `processed` WHERE status='processing' AND
   attempts=<our token>, all in one transaction. If the sweep re-claimed a stalled event meanwhile
   (status back to `received`, or a newer attempt), the fence matches nothing and the handler's
   writes roll back with it: a stale worker can never commit a payment effect.
   The handler runs *before* the fence so that a hung handler holds no lock on the event row and
   the sweep's `processing_stalled` claim can always take it back.

A failure records `failed` with a backoff (first interval = `minutes`, doubling, capped) or `dead`
once the retry budget is spent; a `PermanentEventError` (or a malformed payload) is `dead` at once.

Workers take events in batches (`claim_batch`: one set-based claim for many events, each with its
own attempt number) and complete them together (`complete_attempts`): every event's effects and
fence in one transaction, a savepoint each, so one commit carries many events and a failing
handler rolls back alone. The fence is the same per event; only the commit is shared.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from . import store
from .config import Settings
from .errors import short_error
from .handlers import HandlerContext, HandlerRegistry
from .models import ProcessOutcome, WebhookEvent, utcnow
from .providers.errors import PayloadError

log = logging.getLogger(__name__)


class PermanentEventError(Exception):
    """Raise from a handler when retrying can never succeed: the event goes straight to `dead`."""


class _StaleAttempt(Exception):
    pass


@dataclass(frozen=True)
class Attempt:
    event: WebhookEvent
    number: int


def backoff(attempt: int, *, minutes: int, cap_minutes: int) -> dt.timedelta:
    """Delay before attempt `attempt + 1`: minutes, 2x, 4x, ... capped."""
    return dt.timedelta(minutes=min(minutes * 2 ** max(attempt - 1, 0), cap_minutes))


def start_attempt(
    engine: Engine, event_id: int, *, settings: Settings, now: dt.datetime | None = None
) -> Attempt | None:
    """Claim the event for processing; None when it is not ours to process."""

    def claim(conn: Connection) -> Attempt | None:
        at = now or utcnow()
        event = store.claim_for_processing(
            conn, event_id=event_id, now=at, max_attempts=settings.max_attempts
        )
        if event is None:
            if store.mark_exhausted_dead(
                conn, event_id=event_id, now=at, max_attempts=settings.max_attempts
            ):
                log.warning("webhook event %s is dead: retry budget spent", event_id)
            return None
        return Attempt(event=event, number=event.attempts)

    return store.in_transaction(engine, claim, flush=False)


def _apply(
    conn: Connection,
    attempt: Attempt,
    registry: HandlerRegistry,
    now: dt.datetime,
) -> None:
    """The handler's writes, then `processed` under the attempt's fence (or `_StaleAttempt`)."""
    event = attempt.event
    handler = registry.get(event.provider, event.event_type)
    if handler is not None:
        handler(HandlerContext(conn=conn, event=event, attempt=attempt.number, now=now))
    if not store.mark_processed(conn, event_id=event.id, attempt=attempt.number, now=now):
        raise _StaleAttempt


def complete_attempt(
    engine: Engine,
    attempt: Attempt,
    *,
    settings: Settings,
    registry: HandlerRegistry,
    now_fn: Callable[[], dt.datetime] = utcnow,
) -> ProcessOutcome:
    """Run the handler and commit its effects with `processed`, under the attempt fence."""
    try:
        store.in_transaction(engine, lambda conn: _apply(conn, attempt, registry, now_fn()))
    except _StaleAttempt:
        _log_stale(attempt)
        return ProcessOutcome.STALE
    except Exception as exc:
        return _record_failure(engine, attempt, exc, settings=settings, now=now_fn())
    _log_processed(attempt, registry)
    return ProcessOutcome.PROCESSED


@dataclass(frozen=True)
class _Failure:
    """What a failed attempt records: `failed` with a backoff, or `dead`."""

    dead: bool
    error: str
    next_attempt_at: dt.datetime

    @classmethod
    def of(
        cls, attempt: Attempt, exc: BaseException, *, settings: Settings, now: dt.datetime
    ) -> _Failure:
        used = attempt.number - attempt.event.attempts_base
        permanent = isinstance(exc, PermanentEventError | PayloadError)
        delay = backoff(
            used, minutes=settings.stuck_requeue_minutes, cap_minutes=settings.max_backoff_minutes
        )
        return cls(permanent or used >= settings.max_attempts, short_error(exc), now + delay)

    def record(self, conn: Connection, attempt: Attempt, now: dt.datetime) -> bool:
        """Fenced, like `processed`: False when the attempt was re-claimed meanwhile."""
        return store.mark_failed(
            conn,
            event_id=attempt.event.id,
            attempt=attempt.number,
            now=now,
            error=self.error,
            next_attempt_at=self.next_attempt_at,
            dead=self.dead,
        )

    def outcome(self, attempt: Attempt, recorded: bool) -> ProcessOutcome:
        if not recorded:
            # Re-claimed while this attempt failed: e.g. a worker frozen past the processing
            # timeout, whose session the server ended meanwhile (store.make_engine), wakes to a
            # dead connection.
            _log_stale(attempt, f" ({self.error})")
            return ProcessOutcome.STALE
        event = attempt.event
        log.warning(
            "webhook event %s id=%s provider=%s provider_event_id=%s event_type=%s attempt=%s: %s",
            "dead" if self.dead else "failed",
            event.id,
            event.provider.value,
            event.provider_event_id,
            event.event_type,
            attempt.number,
            self.error,
        )
        return ProcessOutcome.DEAD if self.dead else ProcessOutcome.FAILED


def _record_failure(
    engine: Engine, attempt: Attempt, exc: Exception, *, settings: Settings, now: dt.datetime
) -> ProcessOutcome:
    failure = _Failure.of(attempt, exc, settings=settings, now=now)
    recorded = store.in_transaction(engine, lambda conn: failure.record(conn, attempt, now))
    return failure.outcome(attempt, recorded)


def _log_stale(attempt: Attempt, detail: str = "") -> None:
    log.warning(
        "webhook event %s attempt %s was re-claimed meanwhile: nothing committed%s",
        attempt.event.id,
        attempt.number,
        detail,
    )


def _log_processed(attempt: Attempt, registry: HandlerRegistry) -> None:
    event = attempt.event
    log.info(
        "webhook event processed id=%s provider=%s provider_event_id=%s event_type=%s attempt=%s%s",
        event.id,
        event.provider.value,
        event.provider_event_id,
        event.event_type,
        attempt.number,
        "" if registry.get(event.provider, event.event_type) else " (no handler: no effect)",
    )


def process_event(
    engine: Engine,
    event_id: int,
    *,
    settings: Settings,
    registry: HandlerRegistry,
    now_fn: Callable[[], dt.datetime] = utcnow,
) -> ProcessOutcome:
    """One processing attempt of one event: claim, handle, commit under the fence."""
    attempt = start_attempt(engine, event_id, settings=settings, now=now_fn())
    if attempt is None:
        return ProcessOutcome.NOT_CLAIMED
    return complete_attempt(engine, attempt, settings=settings, registry=registry, now_fn=now_fn)


# --- batches (the table worker, a Celery message's ids) ---------------------------------------


def claim_batch(
    engine: Engine, *, settings: Settings, limit: int, now: dt.datetime | None = None
) -> list[Attempt]:
    """Start up to `limit` attempts in one set-based claim (oldest hand-off first). Rows another
    worker is claiming are skipped, never waited on, so N workers never take the same event."""
    at = now or utcnow()
    events = store.in_transaction(
        engine,
        lambda conn: store.claim_dispatched_batch(
            conn, limit=limit, now=at, max_attempts=settings.max_attempts
        ),
        flush=False,
    )
    return [Attempt(event=e, number=e.attempts) for e in events]


def claim_events(
    engine: Engine, event_ids: list[int], *, settings: Settings, now: dt.datetime | None = None
) -> list[Attempt]:
    """Start attempts on those of `event_ids` that await one, in one set-based claim (a Celery
    message's ids), and bury, in the same transaction, those of them whose retry budget is spent
    without a recorded failure (as `start_attempt` does for one event)."""
    at = now or utcnow()

    def claim(conn: Connection) -> list[Attempt]:
        events = store.claim_events_for_processing(
            conn, event_ids=event_ids, now=at, max_attempts=settings.max_attempts
        )
        others = set(event_ids) - {e.id for e in events}
        if others:
            buried = store.bury_exhausted(
                conn, now=at, max_attempts=settings.max_attempts, event_ids=sorted(others)
            )
            for event_id in buried:
                log.warning("webhook event %s is dead: retry budget spent", event_id)
        return [Attempt(event=e, number=e.attempts) for e in events]

    return store.in_transaction(engine, claim, flush=False)


def process_events(
    engine: Engine,
    event_ids: list[int],
    *,
    settings: Settings,
    registry: HandlerRegistry,
    now_fn: Callable[[], dt.datetime] = utcnow,
) -> dict[int, ProcessOutcome]:
    """One processing attempt of each of `event_ids`: one claim for them all, then one commit
    (`complete_attempts`: a fence per event, a savepoint per failing one). Each id's outcome;
    `not_claimed` for those the claim did not take. One id is `process_event`."""
    if len(event_ids) == 1:
        (event_id,) = event_ids
        return {
            event_id: process_event(
                engine, event_id, settings=settings, registry=registry, now_fn=now_fn
            )
        }
    attempts = claim_events(engine, event_ids, settings=settings, now=now_fn())
    outcomes = dict.fromkeys(event_ids, ProcessOutcome.NOT_CLAIMED)
    done = complete_attempts(engine, attempts, settings=settings, registry=registry, now_fn=now_fn)
    for attempt, outcome in zip(attempts, done, strict=True):
        outcomes[attempt.event.id] = outcome
    return outcomes


def bury_exhausted(engine: Engine, *, settings: Settings, now: dt.datetime | None = None) -> int:
    """Mark `dead` the dispatched events whose retry budget is spent without a recorded failure
    (their workers died mid-attempt): no claim would ever take them again."""
    at = now or utcnow()
    ids = store.in_transaction(
        engine,
        lambda conn: store.bury_exhausted(conn, now=at, max_attempts=settings.max_attempts),
    )
    for event_id in ids:
        log.warning("webhook event %s is dead: retry budget spent", event_id)
    return len(ids)


def _apply_in_savepoint(
    conn: Connection,
    attempt: Attempt,
    *,
    settings: Settings,
    registry: HandlerRegistry,
    now: dt.datetime,
) -> tuple[ProcessOutcome, _Failure | None]:
    """One event of a group: its effects roll back alone if its handler fails or it is stale."""
    savepoint = conn.begin_nested()
    try:
        _apply(conn, attempt, registry, now)
    except _StaleAttempt:
        savepoint.rollback()
        return ProcessOutcome.STALE, None
    except Exception as exc:
        savepoint.rollback()  # raises if the connection itself is gone: the group fails whole
        if isinstance(exc, sa.exc.DBAPIError) and store.is_retryable(exc):
            raise  # a lock cycle: run the whole group again rather than back off this event
        failure = _Failure.of(attempt, exc, settings=settings, now=now)
        recorded = failure.record(conn, attempt, now)
        return (ProcessOutcome.FAILED if recorded else ProcessOutcome.STALE), failure
    savepoint.commit()
    return ProcessOutcome.PROCESSED, None


def complete_attempts(
    engine: Engine,
    attempts: list[Attempt],
    *,
    settings: Settings,
    registry: HandlerRegistry,
    now_fn: Callable[[], dt.datetime] = utcnow,
) -> list[ProcessOutcome]:
    """Complete claimed attempts together: one transaction, one commit, a fence per event.

    The group first runs straight through: the common case, where every handler succeeds, costs
    no savepoint round trips. If any event fails or finds its fence gone, that transaction rolls
    back whole and the group runs again with a savepoint per event, so the failing event rolls
    back alone and the others commit. (A handler may therefore run twice for one attempt, as it
    may when the database breaks a deadlock; its effects commit once, under the fence.) If the
    transaction fails as a whole (the connection was cut, the commit failed), nothing landed, and
    each attempt records its failure alone, exactly as a single attempt would.
    """
    if not attempts:
        return []

    def straight(conn: Connection) -> list[tuple[ProcessOutcome, _Failure | None]]:
        now = now_fn()
        for a in attempts:
            _apply(conn, a, registry, now)
        return [(ProcessOutcome.PROCESSED, None)] * len(attempts)

    def careful(conn: Connection) -> list[tuple[ProcessOutcome, _Failure | None]]:
        now = now_fn()
        return [
            _apply_in_savepoint(conn, a, settings=settings, registry=registry, now=now)
            for a in attempts
        ]

    try:
        try:
            results = store.in_transaction(engine, straight)
        except Exception:
            results = store.in_transaction(engine, careful)
    except Exception as exc:
        return [_record_failure(engine, a, exc, settings=settings, now=now_fn()) for a in attempts]
    outcomes = []
    for attempt, (outcome, failure) in zip(attempts, results, strict=True):
        if outcome is ProcessOutcome.PROCESSED:
            _log_processed(attempt, registry)
        elif failure is not None:
            outcome = failure.outcome(attempt, outcome is not ProcessOutcome.STALE)
        else:
            _log_stale(attempt)
        outcomes.append(outcome)
    return outcomes

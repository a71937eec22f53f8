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
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

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
        number = store.claim_for_processing(
            conn, event_id=event_id, now=at, max_attempts=settings.max_attempts
        )
        if number is None:
            if store.mark_exhausted_dead(
                conn, event_id=event_id, now=at, max_attempts=settings.max_attempts
            ):
                log.warning("webhook event %s is dead: retry budget spent", event_id)
            return None
        event = store.get_event(conn, event_id=event_id)
        assert event is not None
        return Attempt(event=event, number=number)

    return store.in_transaction(engine, claim)


def complete_attempt(
    engine: Engine,
    attempt: Attempt,
    *,
    settings: Settings,
    registry: HandlerRegistry,
    now_fn: Callable[[], dt.datetime] = utcnow,
) -> ProcessOutcome:
    """Run the handler and commit its effects with `processed`, under the attempt fence."""
    event = attempt.event
    handler = registry.get(event.provider, event.event_type)

    def apply(conn: Connection) -> None:
        now = now_fn()
        if handler is not None:
            handler(HandlerContext(conn=conn, event=event, attempt=attempt.number, now=now))
        if not store.mark_processed(conn, event_id=event.id, attempt=attempt.number, now=now):
            raise _StaleAttempt

    try:
        store.in_transaction(engine, apply)
    except _StaleAttempt:
        log.warning(
            "webhook event %s attempt %s was re-claimed meanwhile: nothing committed",
            event.id,
            attempt.number,
        )
        return ProcessOutcome.STALE
    except Exception as exc:
        return _record_failure(engine, attempt, exc, settings=settings, now=now_fn())
    log.info(
        "webhook event processed id=%s provider=%s provider_event_id=%s event_type=%s attempt=%s%s",
        event.id,
        event.provider.value,
        event.provider_event_id,
        event.event_type,
        attempt.number,
        "" if handler else " (no handler: no effect)",
    )
    return ProcessOutcome.PROCESSED


def _record_failure(
    engine: Engine, attempt: Attempt, exc: Exception, *, settings: Settings, now: dt.datetime
) -> ProcessOutcome:
    event = attempt.event
    used = attempt.number - event.attempts_base
    permanent = isinstance(exc, PermanentEventError | PayloadError)
    dead = permanent or used >= settings.max_attempts
    delay = backoff(
        used, minutes=settings.stuck_requeue_minutes, cap_minutes=settings.max_backoff_minutes
    )
    error = short_error(exc)

    def record(conn: Connection) -> bool:
        return store.mark_failed(
            conn,
            event_id=event.id,
            attempt=attempt.number,
            now=now,
            error=error,
            next_attempt_at=now + delay,
            dead=dead,
        )

    if not store.in_transaction(engine, record):
        # Re-claimed while this attempt failed: e.g. a worker frozen past the processing timeout,
        # whose session the server ended meanwhile (store.make_engine), wakes to a dead connection.
        log.warning(
            "webhook event %s attempt %s was re-claimed meanwhile: nothing committed (%s)",
            event.id,
            attempt.number,
            error,
        )
        return ProcessOutcome.STALE
    log.warning(
        "webhook event %s id=%s provider=%s provider_event_id=%s event_type=%s attempt=%s: %s",
        "dead" if dead else "failed",
        event.id,
        event.provider.value,
        event.provider_event_id,
        event.event_type,
        attempt.number,
        error,
    )
    return ProcessOutcome.DEAD if dead else ProcessOutcome.FAILED


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

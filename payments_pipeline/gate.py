"""The receive-side atomic dispatch gate (seed: WebhookController, patch 4.2).

A delivery is recorded once (insert-or-ignore on the provider key) and handed on only by the one
caller whose conditional UPDATE changed exactly one row. The insert commits on its own before the
claims run: on MySQL a caller that lost the insert race holds a shared lock on the duplicate key
until its transaction ends, and two such callers claiming in the same transaction would deadlock.
A crash between the two transactions leaves `dispatched_at` NULL, which the sweep recovers.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from . import store
from .dispatch import Dispatcher
from .models import EventRef, EventStatus, GateOutcome, Provider, utcnow

log = logging.getLogger(__name__)

MAX_PROVIDER_EVENT_ID = 255
MAX_EVENT_TYPE = 255


@dataclass(frozen=True)
class ReceiveResult:
    event: EventRef
    outcome: GateOutcome
    created: bool  # this delivery inserted the row (False: a duplicate delivery)

    @property
    def should_dispatch(self) -> bool:
        return self.outcome in (GateOutcome.DISPATCHED, GateOutcome.REDISPATCHED)


def receive(
    engine: Engine,
    *,
    provider: Provider | str,
    provider_event_id: str,
    event_type: str,
    payload: str,
    minutes: int,
    dispatcher: Dispatcher | None = None,
    now: dt.datetime | None = None,
) -> ReceiveResult:
    """Record a delivery and decide, atomically, whether this caller dispatches it.

    With a `dispatcher`, a winning claim is dispatched after the commit; without one the caller
    dispatches when `result.should_dispatch` (the HTTP receiver answers first, then dispatches).
    """
    provider = Provider(provider)
    if not provider_event_id or len(provider_event_id) > MAX_PROVIDER_EVENT_ID:
        raise ValueError(f"provider_event_id must be 1-{MAX_PROVIDER_EVENT_ID} characters")
    if not event_type or len(event_type) > MAX_EVENT_TYPE:
        raise ValueError(f"event_type must be 1-{MAX_EVENT_TYPE} characters")
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    at = now or utcnow()

    created = store.in_transaction(
        engine,
        lambda conn: store.insert_event_if_new(
            conn,
            provider=provider,
            provider_event_id=provider_event_id,
            event_type=event_type,
            payload=payload,
            now=at,
        ),
    )

    def claim(conn: Connection) -> tuple[EventRef, GateOutcome]:
        event = store.get_event_by_key(conn, provider=provider, provider_event_id=provider_event_id)
        assert event is not None, "the row was committed above"
        ref = EventRef(event.id, event.provider, event.provider_event_id, event.event_type)
        if event.status is EventStatus.PROCESSED:
            return ref, GateOutcome.ALREADY_PROCESSED
        if store.claim_undispatched(conn, event_id=event.id, now=at):
            return ref, GateOutcome.DISPATCHED
        stuck_before = at - dt.timedelta(minutes=minutes)
        if store.claim_failed_for_redispatch(
            conn, event_id=event.id, now=at, stuck_before=stuck_before
        ):
            return ref, GateOutcome.REDISPATCHED
        return ref, GateOutcome.RECEIVED

    ref, outcome = store.in_transaction(engine, claim)
    result = ReceiveResult(event=ref, outcome=outcome, created=created)
    log.info(
        "webhook received provider=%s provider_event_id=%s event_type=%s outcome=%s",
        ref.provider.value,
        ref.provider_event_id,
        ref.event_type,
        outcome.value,
    )
    if dispatcher is not None and result.should_dispatch:
        dispatcher.dispatch(ref)
    return result

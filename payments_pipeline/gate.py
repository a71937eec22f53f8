"""The receive-side atomic dispatch gate (seed: WebhookController, patch 4.2).

A delivery is recorded once and handed on only by the one caller whose write decided it:

- a new event is inserted already claimed (`dispatched_at = now`) by an insert-or-ignore on the
  provider key: exactly one inserter wins, in one statement (the seed's insert + claim 1, fused);
- a duplicate delivery then runs the seed's claims, each a conditional UPDATE whose row count
  decides: claim 1 (`dispatched_at IS NULL`, rows inserted unclaimed by older code or by hand),
  claim 2 (failed long enough ago, backoff over).
The duplicate's claims run in a second transaction, after the insert's has ended: on MySQL a caller
that lost the insert race holds a shared lock on the duplicate key until its transaction ends, and
two such callers claiming in that same transaction would deadlock.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from . import store
from .models import KEY_LENGTH, EventRef, EventStatus, GateOutcome, Provider, ReceivedVia, utcnow

log = logging.getLogger(__name__)


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
    now: dt.datetime | None = None,
    received_via: ReceivedVia = ReceivedVia.WEBHOOK,
) -> ReceiveResult:
    """Record a delivery and decide, atomically, whether this caller dispatches it: the caller
    hands the event on when `result.should_dispatch`, after the commit (the HTTP receiver answers
    first, then dispatches). A reconciliation receives the events it lists here too,
    `received_via = api`.
    """
    provider = Provider(provider)
    if not provider_event_id or len(provider_event_id) > KEY_LENGTH:
        raise ValueError(f"provider_event_id must be 1-{KEY_LENGTH} characters")
    if not event_type or len(event_type) > KEY_LENGTH:
        raise ValueError(f"event_type must be 1-{KEY_LENGTH} characters")
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    at = now or utcnow()

    new_id = store.in_transaction(
        engine,
        lambda conn: store.insert_event_if_new(
            conn,
            provider=provider,
            provider_event_id=provider_event_id,
            event_type=event_type,
            payload=payload,
            now=at,
            claim=True,
            received_via=received_via,
        ),
    )
    if new_id is not None:
        ref = EventRef(new_id, provider, provider_event_id, event_type)
        return _decided(ReceiveResult(ref, GateOutcome.DISPATCHED, created=True))

    def claim(conn: Connection) -> tuple[EventRef, GateOutcome]:
        found = store.get_event_state(conn, provider=provider, provider_event_id=provider_event_id)
        assert found is not None, "the insert above conflicted with this committed row"
        ref, status = found
        if status is EventStatus.PROCESSED:
            return ref, GateOutcome.ALREADY_PROCESSED
        if store.claim_undispatched(conn, event_id=ref.id, now=at):
            return ref, GateOutcome.DISPATCHED
        stuck_before = at - dt.timedelta(minutes=minutes)
        if store.claim_failed_for_redispatch(
            conn, event_id=ref.id, now=at, stuck_before=stuck_before
        ):
            return ref, GateOutcome.REDISPATCHED
        return ref, GateOutcome.RECEIVED

    ref, outcome = store.in_transaction(engine, claim)
    return _decided(ReceiveResult(ref, outcome, created=False))


def _decided(result: ReceiveResult) -> ReceiveResult:
    ref, outcome = result.event, result.outcome
    log.info(
        "webhook received provider=%s provider_event_id=%s event_type=%s outcome=%s",
        ref.provider.value,
        ref.provider_event_id,
        ref.event_type,
        outcome.value,
    )
    return result

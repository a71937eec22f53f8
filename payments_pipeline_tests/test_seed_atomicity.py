"""The seed's six `WebhookDispatchAtomicityTest` cases, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.config import Settings
from payments_pipeline.models import EventStatus, GateOutcome, Provider, SweepReason, utcnow
from payments_pipeline.sweep import SweepParams, run_sweep

from .conftest import EventFactory
from .helpers import (
    RecordingDispatcher,
    ago,
    deliver,
    fetch_event,
    monetbil_payload,
    stripe_payload,
)


def _receive_twice(engine: Engine, provider: Provider, key: str, event_type: str, payload: str):
    dispatcher = RecordingDispatcher()
    results = [
        deliver(engine, provider, key, event_type, payload, dispatcher=dispatcher) for _ in range(2)
    ]
    return results, dispatcher


def test_stripe_atomic_claim_prevents_double_dispatch(engine: Engine) -> None:
    (first, second), dispatcher = _receive_twice(
        engine, Provider.STRIPE, "evt_1", "payment_intent.succeeded", stripe_payload("evt_1")
    )
    assert first.outcome is GateOutcome.DISPATCHED and first.created
    assert second.outcome is GateOutcome.RECEIVED and not second.created
    assert dispatcher.ids == [first.event.id]
    # The losing claim changed no row: calling it again on the same row reports 0 rows.
    with engine.begin() as conn:
        assert not store.claim_undispatched(conn, event_id=first.event.id, now=utcnow())


def test_monetbil_atomic_claim_prevents_double_dispatch(engine: Engine) -> None:
    (first, second), dispatcher = _receive_twice(
        engine, Provider.MONETBIL, "tx_1", "payment.success", monetbil_payload("tx_1")
    )
    assert [first.outcome, second.outcome] == [GateOutcome.DISPATCHED, GateOutcome.RECEIVED]
    assert dispatcher.ids == [first.event.id]


def _sweep(engine: Engine, **params: object):
    dispatcher = RecordingDispatcher()
    summary = run_sweep(engine, SweepParams(**params), dispatcher)  # type: ignore[arg-type]
    return summary, dispatcher


def test_command_requeues_stuck_events_with_null_dispatched_at(
    engine: Engine, event_factory: EventFactory
) -> None:
    event_id = event_factory(Provider.STRIPE, created_at=ago(minutes=30))
    before = utcnow()
    summary, dispatcher = _sweep(engine)
    assert dispatcher.ids == [event_id]
    assert summary.events[0].reason is SweepReason.DISPATCHED_AT_NULL
    dispatched_at = fetch_event(engine, event_id).dispatched_at
    assert dispatched_at is not None and dispatched_at >= before


def test_command_requeues_failed_old_events(engine: Engine, event_factory: EventFactory) -> None:
    old = ago(minutes=20)
    event_id = event_factory(Provider.STRIPE, status=EventStatus.FAILED, dispatched_at=old)
    summary, dispatcher = _sweep(engine, minutes=10)
    assert dispatcher.ids == [event_id]
    assert summary.events[0].reason is SweepReason.FAILED_OLD
    assert fetch_event(engine, event_id).dispatched_at > old


def test_command_skips_recent_events(engine: Engine, event_factory: EventFactory) -> None:
    recent = ago(minutes=2)
    failed = event_factory(Provider.STRIPE, status=EventStatus.FAILED, dispatched_at=recent)
    received = event_factory(Provider.STRIPE, dispatched_at=recent)
    summary, dispatcher = _sweep(engine, minutes=10)
    assert dispatcher.ids == []
    assert summary.total.scanned == 0
    assert fetch_event(engine, failed).dispatched_at == recent
    assert fetch_event(engine, received).dispatched_at == recent


def test_command_requeues_monetbil_stuck_events(
    engine: Engine, event_factory: EventFactory
) -> None:
    null = event_factory(Provider.MONETBIL)
    failed = event_factory(
        Provider.MONETBIL, status=EventStatus.FAILED, dispatched_at=ago(minutes=15)
    )
    stripe_id = event_factory(Provider.STRIPE)
    summary, dispatcher = _sweep(engine, provider="monetbil")
    assert sorted(dispatcher.ids) == sorted([null, failed])
    assert stripe_id not in dispatcher.ids
    assert list(summary.providers) == [Provider.MONETBIL]
    assert summary.total.dispatched == 2


def test_settings_are_not_needed_by_the_gate(engine: Engine) -> None:
    # The gate takes minutes explicitly (the receiver passes PAYMENTS_STUCK_REQUEUE_MINUTES).
    result = gate.receive(
        engine,
        provider="stripe",
        provider_event_id="evt_x",
        event_type="payment_intent.succeeded",
        payload=stripe_payload("evt_x"),
        minutes=Settings(database_url="sqlite://").stuck_requeue_minutes,
        now=utcnow() - dt.timedelta(seconds=1),
    )
    assert result.should_dispatch


def test_gate_claim_2_needs_an_old_dispatch_and_an_ended_backoff(
    engine: Engine, event_factory: EventFactory
) -> None:
    # A retried delivery of a failed event re-dispatches it only when both hold: dispatched more
    # than `minutes` ago (or never) and its backoff over. Each side of each condition, per backend.
    cases = [
        ("never dispatched, backoff over", None, ago(minutes=1), GateOutcome.DISPATCHED),
        ("dispatched long ago, backoff over", ago(minutes=30), ago(minutes=1), "redispatched"),
        ("dispatched long ago, no backoff set", ago(minutes=30), None, "redispatched"),
        ("dispatched recently", ago(minutes=5), ago(minutes=1), GateOutcome.RECEIVED),
        ("backoff not over", ago(minutes=30), utcnow() + dt.timedelta(minutes=5), "received"),
    ]
    for n, (label, dispatched_at, next_attempt_at, expected) in enumerate(cases):
        key = f"evt_claim2_{n}"
        event_id = event_factory(
            Provider.STRIPE,
            provider_event_id=key,
            status=EventStatus.FAILED,
            attempts=1,
            dispatched_at=dispatched_at,
            next_attempt_at=next_attempt_at,
        )
        result = deliver(
            engine, Provider.STRIPE, key, "payment_intent.succeeded", stripe_payload(key)
        )
        assert result.outcome == GateOutcome(expected), label
        assert result.event.id == event_id, label
        claimed = fetch_event(engine, event_id).dispatched_at
        assert (claimed != dispatched_at) is result.should_dispatch, label

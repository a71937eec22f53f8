"""Duplicated, shuffled deliveries processed by parallel workers leave `payments` right.

A few payments get many Stripe events each (no cancel: without one, every arrival order ends in
the same state, see `payment_state`), each delivered 1-3 times, shuffled, through the gate by eight
threads with inline processing; a final sweep picks up anything a lost race left behind. The table
must equal an independent replay of the events, and no event may have applied an effect twice.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import payment_state, store
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.models import EventStatus, PaymentFacts, PaymentStatus, Provider
from payments_pipeline.providers import stripe
from payments_pipeline.sweep import SweepParams, run_sweep

from .helpers import make_settings, receive_and_dispatch, stripe_payload
from .test_races import run_together

WORKERS = 8
TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "checkout.session.completed",
)


def _deliver(
    engine: Engine, dispatcher: InlineDispatcher, key: str, event_type: str, body: str
) -> None:
    """A Stripe delivery through the gate, processed inline when this caller's claim won."""
    receive_and_dispatch(
        engine,
        dispatcher,
        provider="stripe",
        provider_event_id=key,
        event_type=event_type,
        payload=body,
        minutes=10,
    )


def test_duplicates_and_out_of_order_events_from_parallel_workers(engine: Engine) -> None:
    rng = random.Random(20261123)
    settings = make_settings(engine)
    events: list[tuple[str, str, str]] = []  # (event id, type, body)
    # Few payments, many events each: workers collide on the same payment row all the time, so a
    # lost compare-and-set (two workers deciding on the same old state) would show.
    for p in range(4):
        kinds = [rng.choice(TYPES) for _ in range(rng.randint(8, 14))]
        for n, event_type in enumerate(kinds):
            key = f"evt_{p}_{n}"
            body = stripe_payload(
                key,
                event_type,
                reference=f"pi_{p}",
                amount=100 + p,
                created=1_700_000_000 + rng.randint(0, 50),
            )
            events.append((key, event_type, body))
    deliveries = [e for e in events for _ in range(rng.randint(1, 3))]
    rng.shuffle(deliveries)
    dispatcher = InlineDispatcher(engine, settings)

    def worker(i: int) -> None:
        for key, event_type, body in deliveries[i::WORKERS]:
            _deliver(engine, dispatcher, key, event_type, body)

    run_together(WORKERS, worker)
    run_sweep(engine, SweepParams(), dispatcher)

    with engine.connect() as conn:
        statuses = Counter(conn.execute(sa.select(store.webhook_events.c.status)).scalars())
        ledger = conn.execute(sa.select(store.payment_ledger.c.webhook_event_id)).scalars().all()
        table = {(p.provider, p.reference): p.status for p in store.list_payments(conn)}
    assert statuses == {EventStatus.PROCESSED.value: len(events)}
    assert len(ledger) == len(set(ledger))  # no effect applied twice
    updates = [stripe.payment_update(t, body) for _, t, body in events]
    expected = payment_state.replay(u for u in updates if u is not None)
    assert table == expected
    assert {ref for _, ref in table} == {f"pi_{p}" for p in range(4)}
    assert all(provider is Provider.STRIPE for provider, _ in table)


def test_compare_and_set_refuses_a_decision_taken_on_a_stale_read(engine: Engine) -> None:
    """The interleaving the parallel test can only hope to hit, forced: worker A reads `pending`,
    worker B commits `refunded`, then A's `failed` (decided on `pending`) must not land."""
    settings = make_settings(engine)
    dispatcher = InlineDispatcher(engine, settings)
    first = stripe_payload("evt_a", "checkout.session.completed", reference="pi_x")
    _deliver(
        engine,
        dispatcher,
        "evt_a",
        "checkout.session.completed",
        first.replace('"paid"', '"unpaid"'),
    )
    with engine.connect() as conn:
        stale = store.get_payment(conn, provider=Provider.STRIPE, reference="pi_x")
    assert stale is not None and stale.status.value == "pending"
    refund = stripe_payload("evt_b", "charge.refunded", reference="pi_x")
    _deliver(engine, dispatcher, "evt_b", "charge.refunded", refund)
    with engine.begin() as conn:
        landed = store.update_payment_if_unchanged(
            conn,
            seen=stale,
            facts=dataclasses.replace(PaymentFacts.of(stale), status=PaymentStatus.FAILED),
            event_id=999,
            now=stale.updated_at,
        )
    assert landed is False
    with engine.connect() as conn:
        payment = store.get_payment(conn, provider=Provider.STRIPE, reference="pi_x")
    assert payment is not None and payment.status.value == "refunded"

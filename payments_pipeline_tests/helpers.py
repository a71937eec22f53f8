"""Helpers shared by the tests: payload builders, settings, a recording dispatcher, deliveries
through the gate."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.config import Settings
from payments_pipeline.dispatch import Dispatcher, TableDispatcher
from payments_pipeline.gate import ReceiveResult
from payments_pipeline.models import Provider, WebhookEvent, utcnow
from payments_pipeline.providers import samples


def make_settings(engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "stuck_requeue_minutes": 10,
        "max_attempts": 3,
        "processing_timeout_minutes": 30,
    }
    values.update(overrides)
    return Settings(**values)


def stripe_payload(
    event_id: str,
    event_type: str = samples.PAYMENT_INTENT_SUCCEEDED,
    *,
    created: int = 1_700_000_000,
    **fields: Any,
) -> str:
    """`samples.stripe_event` with a fixed `created`, so tests can order events around it."""
    return samples.stripe_event(event_id, event_type, created=created, **fields)


def monetbil_payload(transaction_id: str, status: str = "1", **fields: str) -> str:
    """A stored Monetbil notification (processing does not check `sign` again)."""
    return samples.monetbil_notification(
        transaction_id, status, **{"sign": "unchecked-at-processing", **fields}
    )


def ago(**delta: float) -> dt.datetime:
    return utcnow() - dt.timedelta(**delta)


def fetch_event(engine: Engine, event_id: int) -> WebhookEvent:
    with engine.connect() as conn:
        event = store.get_event(conn, event_id=event_id)
    assert event is not None
    return event


class RecordingDispatcher:
    """A fake dispatcher that remembers what it was handed (thread-safe append)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def dispatch(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.events]


def payment_rows(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """Every payment as (status, amount, amount_received, amount_refunded, currency, livemode),
    by reference: what the payment-rule tests assert, whole."""
    with engine.connect() as conn:
        return {
            p.reference: (
                p.status,
                p.amount,
                p.amount_received,
                p.amount_refunded,
                p.currency,
                p.livemode,
            )
            for p in store.list_payments(conn)
        }


MetricSamples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> MetricSamples:
    """A Prometheus text exposition as {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(samples: MetricSamples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the scrape has no such series."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def receive_and_dispatch(engine: Engine, dispatcher: Dispatcher, **delivery: Any) -> ReceiveResult:
    """`gate.receive(engine, **delivery)`, then the hand-off a door makes when its claim won."""
    result = gate.receive(engine, **delivery)
    if result.should_dispatch:
        dispatcher.dispatch(result.event)
    return result


def receive_stripe(
    engine: Engine, key: str, dispatcher: Dispatcher | None = None, **fields: Any
) -> int:
    """A new Stripe `payment_intent.succeeded` the gate takes and hands to `dispatcher` (without
    one, the claim is all: the `table` engine's hand-off); its event id."""
    result = receive_and_dispatch(
        engine,
        dispatcher or TableDispatcher(),
        provider="stripe",
        provider_event_id=key,
        event_type=samples.PAYMENT_INTENT_SUCCEEDED,
        payload=stripe_payload(key, **fields),
        minutes=10,
    )
    assert result.should_dispatch
    return result.event.id


def deliver(
    engine: Engine,
    provider: Provider | str,
    key: str,
    event_type: str,
    payload: str,
    *,
    dispatcher: Dispatcher | None = None,
    now: dt.datetime | None = None,
) -> ReceiveResult:
    """One delivery through the gate, as the receiver makes it (a 10-minute stuck threshold),
    handed to `dispatcher` when its claim won (without one, the claim is all: `table`)."""
    return receive_and_dispatch(
        engine,
        dispatcher or TableDispatcher(),
        provider=provider,
        provider_event_id=key,
        event_type=event_type,
        payload=payload,
        minutes=10,
        now=now,
    )


def redeliver(
    engine: Engine, event_id: int, *, dispatcher: Dispatcher | None = None
) -> ReceiveResult:
    """The provider delivers a stored event again (same key, type and payload)."""
    event = fetch_event(engine, event_id)
    return deliver(
        engine,
        event.provider,
        event.provider_event_id,
        event.event_type,
        event.payload,
        dispatcher=dispatcher,
    )

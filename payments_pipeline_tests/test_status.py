"""The read side (`status.read_status`): what every door shows, from the sweep's own definition."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import status, store
from payments_pipeline.config import Settings
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.models import PROVIDERS, EventStatus, Provider
from payments_pipeline.providers import samples

from .conftest import EventFactory
from .helpers import ago, deliver, make_settings


def test_report_counts_stuck_dead_and_expired(
    engine: Engine, settings: Settings, event_factory: EventFactory
) -> None:
    event_factory(Provider.STRIPE, created_at=ago(hours=3))  # dispatched_at_null, 3 h old
    event_factory(Provider.STRIPE, dispatched_at=ago(seconds=30))  # in flight: not stuck
    event_factory(Provider.STRIPE, created_at=ago(days=9))  # stuck, older than the window
    dead = event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=10)
    event_factory(
        Provider.MONETBIL,
        status=EventStatus.PROCESSING,
        processing_started_at=ago(minutes=31),
        dispatched_at=ago(minutes=31),
        created_at=ago(minutes=32),
    )  # processing_stalled

    report = status.read_status(engine, settings)

    assert report.counts["stripe"][EventStatus.RECEIVED] == 3
    assert report.counts["monetbil"][EventStatus.DEAD] == 1
    assert report.counts["monetbil"][EventStatus.PROCESSED] == 0
    assert report.oldest_stuck_age("stripe").days == 9
    assert 31 * 60 <= report.oldest_stuck_age("monetbil").total_seconds() < 33 * 60
    assert report.dead_count == 1 and [d.event.id for d in report.dead_events] == [dead]
    assert report.expired == {"stripe": 1, "monetbil": 0}
    assert report.as_json()["expired"] == {"count": 1, "by_provider": report.expired}


def test_nothing_stuck_reads_as_empty(engine: Engine, settings: Settings) -> None:
    report = status.read_status(engine, settings)
    assert report.oldest_stuck == {} and report.dead_count == 0
    assert report.expired == {"stripe": 0, "monetbil": 0}
    assert all(n == 0 for row in report.counts.values() for n in row.values())


def test_a_status_this_version_does_not_know_is_left_out_of_the_counts(
    engine: Engine, settings: Settings, event_factory: EventFactory
) -> None:
    """A row a newer version wrote (a rolling upgrade) never makes the read side fail: the
    counts show the statuses this code knows, the others are left out, as before."""
    event_factory(Provider.STRIPE, status=EventStatus.PROCESSED, attempts=1)
    newer = event_factory(Provider.STRIPE, status=EventStatus.PROCESSED, attempts=1)
    with engine.begin() as conn:
        conn.execute(
            sa.update(store.webhook_events)
            .where(store.webhook_events.c.id == newer)
            .values(status="archived")
        )
    report = status.read_status(engine, settings)
    assert report.counts["stripe"][EventStatus.PROCESSED] == 1
    assert sum(report.counts["stripe"].values()) == 1


def test_live_and_test_mode_payments_are_reported_apart(engine: Engine, settings: Settings) -> None:
    dispatcher = InlineDispatcher(engine, settings)
    deliveries = [
        ("stripe", "evt_live", samples.stripe_event("evt_live", reference="pi_l", livemode=True)),
        ("stripe", "evt_test", samples.stripe_event("evt_test", reference="pi_t", amount=700)),
        (
            "monetbil",
            "TX1:7",  # Monetbil's test-mode success
            samples.monetbil_notification("TX1", "7", payment_ref="o1", amount="500"),
        ),
    ]
    for provider, key, payload in deliveries:
        event_type = "payment.success" if provider == "monetbil" else "payment_intent.succeeded"
        deliver(engine, provider, key, event_type, payload, dispatcher=dispatcher)
    report = status.read_status(engine, settings).as_json()["payments"]
    assert report["live"]["count"] == 1 and report["live"]["by_status"]["succeeded"] == 1
    assert report["test"]["count"] == 2 and report["test"]["by_status"]["succeeded"] == 2
    assert report["test"]["received"] == {"XAF": 500, "EUR": 700}
    assert report["live"]["received"] == {"EUR": 1000} and report["live"]["refunded"] == {}


def test_dead_events_carry_the_cause_processing_recorded(
    engine: Engine, event_factory: EventFactory
) -> None:
    """Dead on attempt 1 of 3 is a permanent error; dead after 3 of 3, a spent budget (as
    `bury_exhausted` and the failure path leave them)."""
    settings = make_settings(engine, max_attempts=3)
    permanent = event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=1)
    spent = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=3)
    event_factory(Provider.STRIPE, status=EventStatus.FAILED, attempts=1)
    with engine.connect() as conn:
        dead = status.list_dead(conn, PROVIDERS, max_attempts=settings.max_attempts)
        stripe_only = status.list_dead(conn, [Provider.STRIPE], max_attempts=3)
        backlog = status.read_backlog(conn, settings, payments=False)
    assert [(d.state.event.id, d.cause) for d in dead] == [
        (permanent, "permanent error on attempt 1"),
        (spent, "retry budget spent (3 attempts)"),
    ]
    assert [d.state.event.id for d in stripe_only] == [spent]
    assert [d.state.event.id for d in backlog.dead_events] == [permanent, spent]

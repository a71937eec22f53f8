"""The sweep: every reason, the window and `expired`, the provider filter, JSON, audit, dry run."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.models import EventStatus, Provider, SweepOutcome, SweepReason, SweepTrigger
from payments_pipeline.sweep import SweepParamError, SweepParams, run_sweep

from .conftest import EventFactory
from .helpers import RecordingDispatcher, ago, fetch_event


def _sweep(engine: Engine, **params: object):
    dispatcher = RecordingDispatcher()
    return run_sweep(engine, SweepParams(**params), dispatcher), dispatcher  # type: ignore[arg-type]


def test_dispatch_lost_is_requeued_after_minutes(
    engine: Engine, event_factory: EventFactory
) -> None:
    lost = event_factory(Provider.STRIPE, dispatched_at=ago(minutes=11))
    recent = event_factory(Provider.STRIPE, dispatched_at=ago(minutes=9))
    summary, dispatcher = _sweep(engine, minutes=10)
    assert dispatcher.ids == [lost]
    assert summary.events[0].reason is SweepReason.DISPATCH_LOST
    assert fetch_event(engine, recent).dispatched_at is not None


def test_processing_stalled_goes_back_to_received(
    engine: Engine, processing_event: EventFactory
) -> None:
    stalled = processing_event(
        Provider.MONETBIL, started=ago(minutes=31), dispatched_at=ago(hours=1)
    )
    busy = processing_event(Provider.MONETBIL, started=ago(minutes=5), dispatched_at=ago(minutes=5))
    summary, dispatcher = _sweep(engine, processing_timeout_minutes=30)
    assert dispatcher.ids == [stalled]
    assert summary.events[0].reason is SweepReason.PROCESSING_STALLED
    event = fetch_event(engine, stalled)
    assert event.status is EventStatus.RECEIVED and event.processing_started_at is None
    assert event.attempts == 1  # the token only moves at the next processing claim
    assert fetch_event(engine, busy).status is EventStatus.PROCESSING


def test_failed_waits_for_its_backoff(engine: Engine, event_factory: EventFactory) -> None:
    waiting = event_factory(
        Provider.STRIPE,
        status=EventStatus.FAILED,
        attempts=2,
        dispatched_at=ago(minutes=30),
        next_attempt_at=ago(minutes=-5),
    )
    ready = event_factory(
        Provider.STRIPE,
        status=EventStatus.FAILED,
        attempts=2,
        dispatched_at=ago(minutes=30),
        next_attempt_at=ago(minutes=1),
    )
    _, dispatcher = _sweep(engine)
    assert dispatcher.ids == [ready]
    assert waiting not in dispatcher.ids


def test_terminal_and_fresh_events_are_left_alone(
    engine: Engine, event_factory: EventFactory
) -> None:
    for status in (EventStatus.PROCESSED, EventStatus.DEAD):
        event_factory(
            Provider.STRIPE, status=status, dispatched_at=ago(hours=2), created_at=ago(hours=2)
        )
    summary, dispatcher = _sweep(engine)
    assert dispatcher.ids == [] and summary.total.scanned == 0


def test_events_older_than_the_window_are_counted_expired_not_touched(
    engine: Engine, event_factory: EventFactory
) -> None:
    old = event_factory(Provider.STRIPE, created_at=ago(days=8))
    old_failed = event_factory(
        Provider.MONETBIL,
        status=EventStatus.FAILED,
        dispatched_at=ago(days=8),
        created_at=ago(days=8),
    )
    inside = event_factory(Provider.STRIPE, created_at=ago(days=6))
    summary, dispatcher = _sweep(engine)
    assert dispatcher.ids == [inside]
    assert summary.providers[Provider.STRIPE].expired == 1
    assert summary.providers[Provider.MONETBIL].expired == 1
    assert summary.total.expired == 2
    assert fetch_event(engine, old).dispatched_at is None
    assert fetch_event(engine, old_failed).status is EventStatus.FAILED


def test_provider_filter_moves_only_that_provider(
    engine: Engine, event_factory: EventFactory
) -> None:
    stripe_ids = [event_factory(Provider.STRIPE) for _ in range(3)]
    monetbil_ids = [event_factory(Provider.MONETBIL) for _ in range(2)]
    summary, dispatcher = _sweep(engine, provider="stripe")
    assert sorted(dispatcher.ids) == stripe_ids
    assert list(summary.as_json()["providers"]) == ["stripe"]
    assert all(fetch_event(engine, i).dispatched_at is None for i in monetbil_ids)


def test_json_totals_and_shape(engine: Engine, event_factory: EventFactory) -> None:
    event_factory(Provider.STRIPE, provider_event_id="evt_1")
    event_factory(Provider.STRIPE, status=EventStatus.FAILED, dispatched_at=ago(minutes=20))
    event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=20))
    summary, _ = _sweep(engine)
    out = json.loads(json.dumps(summary.as_json()))
    assert set(out) == {
        "sweep_id",
        "minutes",
        "provider",
        "started_at",
        "finished_at",
        "providers",
        "total",
        "events",
    }
    assert out["provider"] == "all" and out["minutes"] == 10
    assert out["providers"] == {
        "stripe": {"scanned": 2, "dispatched": 2, "skipped": 0, "expired": 0},
        "monetbil": {"scanned": 1, "dispatched": 1, "skipped": 0, "expired": 0},
    }
    assert out["total"] == {"scanned": 3, "dispatched": 3, "skipped": 0, "expired": 0}
    first = out["events"][0]
    assert first == {
        "id": first["id"],
        "provider": "stripe",
        "provider_event_id": "evt_1",
        "event_type": "payment_intent.succeeded",
        "reason": "dispatched_at_null",
        "outcome": "dispatched",
    }
    assert out["started_at"].endswith("Z") and out["started_at"] <= out["finished_at"]


def test_empty_providers_are_listed_with_zeros(engine: Engine) -> None:
    summary, _ = _sweep(engine)
    assert summary.as_json()["providers"] == {
        "stripe": {"scanned": 0, "dispatched": 0, "skipped": 0, "expired": 0},
        "monetbil": {"scanned": 0, "dispatched": 0, "skipped": 0, "expired": 0},
    }


def test_audit_rows_record_the_sweep(engine: Engine, event_factory: EventFactory) -> None:
    a = event_factory(Provider.STRIPE)
    b = event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=15))
    dispatcher = RecordingDispatcher()
    summary = run_sweep(
        engine,
        SweepParams(minutes=10),
        dispatcher,
        trigger=SweepTrigger.SCHEDULE,
        dagster_run_id="run-123",
    )
    with engine.connect() as conn:
        run = conn.execute(sa.select(store.sweep_runs)).one()
        events = conn.execute(
            sa.select(
                store.sweep_events.c.event_id,
                store.sweep_events.c.reason,
                store.sweep_events.c.outcome,
            ).order_by(store.sweep_events.c.event_id)
        ).all()
    assert (
        run.id == summary.sweep_id and run.trigger == "schedule" and run.dagster_run_id == "run-123"
    )
    assert (run.status, run.scanned, run.dispatched, run.skipped, run.expired) == (
        "succeeded",
        2,
        2,
        0,
        0,
    )
    assert run.finished_at >= run.started_at
    assert events == [(a, "dispatched_at_null", "dispatched"), (b, "dispatch_lost", "dispatched")]


def test_dry_run_claims_and_writes_nothing(engine: Engine, event_factory: EventFactory) -> None:
    event_id = event_factory(Provider.STRIPE)
    _, dispatcher = _sweep(
        engine
    )  # a real sweep first: the count below shows the dry run adds none
    assert dispatcher.ids == [event_id]
    other = event_factory(Provider.STRIPE)
    dispatcher = RecordingDispatcher()
    dry = run_sweep(engine, SweepParams(), dispatcher, dry_run=True)
    assert dispatcher.ids == [] and dry.sweep_id is None
    assert [e.outcome for e in dry.events] == [SweepOutcome.WOULD_DISPATCH]
    assert dry.as_json()["dry_run"] is True
    assert fetch_event(engine, other).dispatched_at is None
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(store.sweep_runs)).scalar_one() == 1
        )


def test_a_failing_dispatcher_is_recorded_and_recovered(
    engine: Engine, event_factory: EventFactory
) -> None:
    event_id = event_factory(Provider.STRIPE)

    class Broken:
        def dispatch(self, event: object) -> None:
            raise ConnectionError("queue down")

    summary = run_sweep(engine, SweepParams(), Broken())
    assert [e.outcome for e in summary.events] == [SweepOutcome.DISPATCH_FAILED]
    assert summary.total.dispatched == 0
    with engine.connect() as conn:
        outcome = conn.execute(sa.select(store.sweep_events.c.outcome)).scalar_one()
    assert outcome == "dispatch_failed"
    # The row keeps its fresh dispatched_at: after `minutes` it is `dispatch_lost`.
    assert fetch_event(engine, event_id).dispatched_at is not None


def test_batches_cover_every_candidate(engine: Engine, event_factory: EventFactory) -> None:
    ids = [event_factory(Provider.STRIPE) for _ in range(7)]
    summary, dispatcher = _sweep(engine, batch_size=3)
    assert sorted(dispatcher.ids) == ids and summary.total.dispatched == 7


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"minutes": 0}, "minutes"),
        ({"minutes": -5}, "minutes"),
        ({"provider": "paypal"}, "paypal"),
        ({"minutes": "10"}, "minutes"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(SweepParamError, match=message):
        SweepParams(**params)  # type: ignore[arg-type]

"""Settling by hand: `dismiss_events` and the replay of expired events by id, on every database.

Expired = stuck by one of the sweep's reasons, but created before its window (`max_age_days`)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.dismiss import DismissError, dismiss_events
from payments_pipeline.models import EventStatus, GateOutcome, Provider, SweepOutcome
from payments_pipeline.replay import ByHand, replay_events
from payments_pipeline.status import read_backlog, read_status
from payments_pipeline.sweep import SweepParams, run_sweep

from .conftest import EventFactory
from .helpers import RecordingDispatcher, ago, fetch_event, make_settings, redeliver

BY_HAND = ByHand(SweepParams(minutes=10, max_age_days=7))
DISMISSIBLE = "only dead or expired stuck events are dismissed"


def _runs(engine: Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.sweep_runs).order_by(store.sweep_runs.c.id)))


def _audit(engine: Engine, sweep_id: int) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                store.sweep_events.c.event_id,
                store.sweep_events.c.reason,
                store.sweep_events.c.outcome,
            )
            .where(store.sweep_events.c.sweep_id == sweep_id)
            .order_by(store.sweep_events.c.event_id)
        )
        return [tuple(r) for r in rows]


def _expired(event_factory: EventFactory, provider: Provider = Provider.STRIPE) -> int:
    """A failed event last dispatched 9 days ago, created 10 days ago: stuck, outside the window."""
    return event_factory(
        provider,
        status=EventStatus.FAILED,
        attempts=1,
        dispatched_at=ago(days=9),
        created_at=ago(days=10),
    )


def test_dismiss_settles_dead_and_expired_events_and_refuses_the_rest_with_why(
    engine: Engine, event_factory: EventFactory, processing_event: EventFactory
) -> None:
    dead = event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=3)
    expired = _expired(event_factory)
    stalled_old = processing_event(started=ago(days=9), created_at=ago(days=9))
    stuck_in_window = event_factory(status=EventStatus.FAILED, dispatched_at=ago(hours=2))
    done = event_factory(status=EventStatus.PROCESSED, attempts=1)
    old_but_not_stuck = event_factory(
        status=EventStatus.FAILED,
        dispatched_at=ago(days=9),
        next_attempt_at=ago(minutes=-30),  # its backoff is not over: not stuck
        created_at=ago(days=9),
    )
    unknown = done + 1000
    wanted = [dead, expired, stalled_old, stuck_in_window, done, old_but_not_stuck, unknown]
    result = dismiss_events(engine, wanted, "  settled with Stripe\n(ticket 4411) ", by=BY_HAND)

    assert [s.event.id for s in result.dismissed] == [dead, expired, stalled_old]
    assert {s.status for s in result.dismissed} == {EventStatus.DISMISSED}
    assert [(r.event_id, r.why) for r in result.refused] == [
        (stuck_in_window, f"it is failed: {DISMISSIBLE}"),
        (done, f"it is processed: {DISMISSIBLE}"),
        (old_but_not_stuck, f"it is failed: {DISMISSIBLE}"),
        (unknown, "unknown event id"),
    ]
    for event_id in (dead, expired, stalled_old):
        assert fetch_event(engine, event_id).status is EventStatus.DISMISSED
    assert fetch_event(engine, stuck_in_window).status is EventStatus.FAILED
    assert fetch_event(engine, done).status is EventStatus.PROCESSED
    (run,) = _runs(engine)
    assert (run.id, run.kind, run.note, run.status, run.trigger) == (
        result.sweep_id,
        "dismiss",
        "settled with Stripe (ticket 4411)",
        "succeeded",
        "cli",
    )
    assert (run.scanned, run.dispatched, run.skipped, run.provider) == (7, 0, 4, "all")
    assert run.finished_at is not None
    assert _audit(engine, run.id) == [
        (i, "dismissed", SweepOutcome.DISMISSED.value) for i in (dead, expired, stalled_old)
    ]


def test_dismissed_events_are_never_swept_nor_counted_as_dead_stuck_or_expired(
    engine: Engine, event_factory: EventFactory
) -> None:
    settings = make_settings(engine)
    dead = event_factory(status=EventStatus.DEAD, attempts=3)
    expired = _expired(event_factory, Provider.MONETBIL)
    never_dispatched_old = event_factory(created_at=ago(days=8))  # dispatched_at_null, expired
    before = read_status(engine, settings)
    assert before.dead_count == 1 and sum(before.expired.values()) == 2
    result = dismiss_events(
        engine, [dead, expired, never_dispatched_old], "test events", by=BY_HAND
    )
    assert len(result.dismissed) == 3 and not result.refused

    report = read_status(engine, settings)
    assert report.dead_count == 0 and report.dead_events == ()
    assert report.expired == {"stripe": 0, "monetbil": 0}
    assert report.oldest_stuck == {}
    assert report.counts["stripe"][EventStatus.DISMISSED] == 2
    assert report.as_json()["counts"]["monetbil"]["dismissed"] == 1
    with engine.connect() as conn:
        backlog = read_backlog(conn, settings, payments=False)
    assert backlog.numbers()["dead"] == 0 and backlog.numbers()["expired"] == 0
    assert backlog.numbers()["open"] == 0  # settled: not backlog

    dispatcher = RecordingDispatcher()
    summary = run_sweep(engine, SweepParams(max_age_days=30), dispatcher)  # window covers them
    assert summary.total.scanned == 0 and dispatcher.ids == []

    # A late duplicate delivery of the never-dispatched one is not handed on either.
    late = redeliver(engine, never_dispatched_old, dispatcher=dispatcher)
    assert late.outcome is GateOutcome.RECEIVED and dispatcher.ids == []
    assert fetch_event(engine, never_dispatched_old).status is EventStatus.DISMISSED


def test_a_dismissal_that_refuses_every_id_writes_no_audit_row(
    engine: Engine, event_factory: EventFactory
) -> None:
    processed = event_factory(status=EventStatus.PROCESSED)
    result = dismiss_events(engine, [processed, processed + 50], "typo", by=BY_HAND)
    assert result.sweep_id is None and result.dismissed == ()
    assert [r.event_id for r in result.refused] == [processed, processed + 50]
    assert _runs(engine) == []


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before the database is read
@pytest.mark.parametrize(
    ("reason", "ids", "message"),
    [
        ("", [1], "needs a reason"),
        (" \n\t", [1], "needs a reason"),
        ("x" * 501, [1], "the reason is 501 characters long; at most 500"),
        ("ok", [], "name at least one event id"),
    ],
)
def test_a_blank_or_overlong_reason_is_refused_before_anything_changes(
    engine: Engine, event_factory: EventFactory, reason: str, ids: list[int], message: str
) -> None:
    dead = event_factory(status=EventStatus.DEAD)
    with pytest.raises(DismissError, match=message):
        dismiss_events(engine, [dead] if ids else [], reason, by=BY_HAND)
    assert fetch_event(engine, dead).status is EventStatus.DEAD
    assert _runs(engine) == []


def test_replay_takes_an_expired_stuck_event_named_by_id_but_not_one_inside_the_window(
    engine: Engine, event_factory: EventFactory, processing_event: EventFactory
) -> None:
    expired = _expired(event_factory)
    stalled_old = processing_event(started=ago(days=9), attempts=2, created_at=ago(days=9))
    in_window = event_factory(status=EventStatus.FAILED, attempts=1, dispatched_at=ago(hours=1))
    dismissed = event_factory(status=EventStatus.DEAD)
    dismiss_events(engine, [dismissed], "duplicate", by=BY_HAND)
    dispatcher = RecordingDispatcher()
    result = replay_events(
        engine, [expired, stalled_old, in_window, dismissed], dispatcher, by=BY_HAND
    )
    assert [r.id for r in result.replayed] == [expired, stalled_old] == dispatcher.ids
    why = "only dead, processed or expired stuck events are replayed"
    assert [(r.event_id, r.why) for r in result.refused] == [
        (in_window, f"it is failed: {why}"),
        (dismissed, f"it is dismissed: {why}"),
    ]
    stalled = fetch_event(engine, stalled_old)
    assert (stalled.status, stalled.attempts_base, stalled.processing_started_at) == (
        EventStatus.RECEIVED,
        2,  # a fresh budget; the fencing token `attempts` is kept
        None,
    )
    assert [(s.event.id, s.status) for s in result.after] == [
        (expired, EventStatus.RECEIVED),
        (stalled_old, EventStatus.RECEIVED),
    ]
    run = _runs(engine)[-1]
    assert (run.id, run.kind, run.dispatched, run.skipped) == (result.sweep_id, "replay", 2, 2)


def test_a_replay_that_refuses_every_id_writes_no_audit_row(
    engine: Engine, event_factory: EventFactory
) -> None:
    waiting = event_factory(status=EventStatus.FAILED, dispatched_at=ago(minutes=1))
    result = replay_events(engine, [waiting, waiting + 9], RecordingDispatcher(), by=BY_HAND)
    assert result.sweep_id is None and result.replayed == () and len(result.refused) == 2
    assert _runs(engine) == []

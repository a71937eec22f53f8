"""Processing follows the response and never holds it; a hand-off lost after the response is the
sweep's `dispatch_lost`."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence

import pytest
from sqlalchemy import Engine

from payments_pipeline.config import Settings
from payments_pipeline.dispatch import InlineDispatcher, Unsent
from payments_pipeline.http.dispatching import DispatchQueue
from payments_pipeline.models import EventRef, EventStatus, Provider, SweepReason, utcnow
from payments_pipeline.sweep import (
    SweepParams,
    begin_sweep,
    claim_candidates,
    dispatch_claimed,
    finish_sweep,
)

from ..helpers import RecordingDispatcher, fetch_event
from .conftest import ClientFactory
from .support import (
    BlockingDispatcher,
    CrashingDispatcher,
    count_events,
    stripe_event,
    stripe_headers,
)

URL = "/webhooks/stripe"


def test_the_response_does_not_wait_for_processing(
    make_client: ClientFactory, engine: Engine
) -> None:
    dispatcher = BlockingDispatcher()
    client = make_client(dispatcher)
    body = stripe_event("evt_not_held")
    response = client.post(URL, content=body, headers=stripe_headers(body))
    # The answer is back while processing has not been allowed to finish.
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    assert dispatcher.started.wait(10) and dispatcher.done == []
    dispatcher.release.set()
    client.wait_dispatched()
    assert [e.provider_event_id for e in dispatcher.done] == ["evt_not_held"]


def test_a_crash_after_the_response_is_recovered_by_the_sweep_as_dispatch_lost(
    make_client: ClientFactory, engine: Engine, receiver_settings: Settings
) -> None:
    crashing = CrashingDispatcher()
    client = make_client(crashing)
    body = stripe_event("evt_lost", reference="pi_lost")
    response = client.post(URL, content=body, headers=stripe_headers(body))
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    client.wait_dispatched()
    assert crashing.calls == 1
    event_id = response.json()["event_id"]
    lost = fetch_event(engine, event_id)
    assert lost.status is EventStatus.RECEIVED and lost.dispatched_at is not None
    assert lost.attempts == 0  # processing never started

    params = SweepParams(minutes=receiver_settings.stuck_requeue_minutes)
    too_soon = begin_sweep(engine, params, now=utcnow() + dt.timedelta(minutes=9))
    assert too_soon.candidates == ()

    later = utcnow() + dt.timedelta(minutes=params.minutes, seconds=1)
    scan = begin_sweep(engine, params, now=later)
    claim = claim_candidates(engine, scan)
    dispatch = dispatch_claimed(engine, scan, claim, InlineDispatcher(engine, receiver_settings))
    summary = finish_sweep(engine, scan, claim, dispatch)
    assert [(e.event.id, e.reason) for e in summary.events] == [
        (event_id, SweepReason.DISPATCH_LOST)
    ]
    recovered = fetch_event(engine, event_id)
    assert recovered.status is EventStatus.PROCESSED and recovered.attempts == 1


def test_dispatch_none_claims_without_processing(
    make_client: ClientFactory, engine: Engine
) -> None:
    client = make_client(receiver_dispatch="none")
    body = stripe_event("evt_door_only")
    response = client.post(URL, content=body, headers=stripe_headers(body))
    client.wait_dispatched()
    event = fetch_event(engine, response.json()["event_id"])
    assert event.status is EventStatus.RECEIVED and event.dispatched_at is not None
    assert count_events(engine) == 1


def _ref(n: int) -> EventRef:
    return EventRef(n, Provider.STRIPE, f"evt_{n}", "payment_intent.succeeded")


def test_a_full_queue_leaves_the_event_for_the_sweep(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = BlockingDispatcher()
    queue = DispatchQueue(dispatcher, threads=1, capacity=1)
    try:
        assert queue.offer(_ref(1))
        assert dispatcher.started.wait(10)  # the worker holds event 1
        assert queue.offer(_ref(2))  # waits in the queue
        with caplog.at_level(logging.WARNING):
            assert not queue.offer(_ref(3))
        assert "dispatch queue full" in caplog.text and "dispatch_lost" in caplog.text
    finally:
        dispatcher.release.set()
        assert queue.close(10) == 0
    assert [e.id for e in dispatcher.done] == [1, 2]


def test_stopping_with_events_queued_leaves_them_for_the_sweep() -> None:
    dispatcher = BlockingDispatcher()
    queue = DispatchQueue(dispatcher, threads=1, capacity=10)
    for n in range(1, 4):
        assert queue.offer(_ref(n))
    assert dispatcher.started.wait(10)
    assert queue.close(0.2) == 2  # event 1 is in the worker; 2 and 3 never started
    assert not queue.offer(_ref(4))  # closed: refused, left for the sweep
    dispatcher.release.set()


def test_a_failing_dispatch_does_not_stop_the_worker() -> None:
    class FailsFirst(RecordingDispatcher):
        def dispatch(self, event: object) -> None:
            super().dispatch(event)
            if len(self.events) == 1:
                raise ConnectionError("queue down")

    dispatcher = FailsFirst()
    queue = DispatchQueue(dispatcher, threads=1)
    queue.offer(_ref(1))
    queue.offer(_ref(2))
    assert queue.wait_idle(10)
    assert queue.close(1) == 0
    assert dispatcher.ids == [1, 2]


class BatchRecorder(RecordingDispatcher):
    """Remembers each `dispatch_many` call's ids; refuses the events whose id is in `refuse`."""

    def __init__(self, refuse: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.batches: list[list[int]] = []
        self.refuse = refuse

    def dispatch_many(self, events: Sequence[EventRef]) -> list[Unsent]:
        self.batches.append([e.id for e in events])
        return [Unsent(e, ConnectionError("broker gone")) for e in events if e.id in self.refuse]


def test_claims_within_the_wait_go_on_together_and_a_lone_one_after_the_wait() -> None:
    dispatcher = BatchRecorder()
    queue = DispatchQueue(dispatcher, threads=1, batch_size=3, coalesce_seconds=0.5)
    started = time.monotonic()
    for n in range(1, 6):
        assert queue.offer(_ref(n))
    assert queue.wait_idle(10)
    # 1-3 reach the size bound at once; 4 and 5 go out when the wait after 4 is over.
    assert dispatcher.batches == [[1, 2, 3], [4, 5]]
    assert 0.4 < time.monotonic() - started < 5
    started = time.monotonic()
    assert queue.offer(_ref(6))
    assert queue.wait_idle(10)
    assert dispatcher.ids == [6] and dispatcher.batches == [[1, 2, 3], [4, 5]]  # `dispatch`
    assert 0.4 < time.monotonic() - started < 5
    assert queue.close(1) == 0


def test_several_threads_gather_one_batch_at_a_time() -> None:
    """Idle threads do not split a window's events between them: one thread gathers, the others
    wait their turn (and hand their own batches on meanwhile)."""
    dispatcher = BatchRecorder()
    queue = DispatchQueue(dispatcher, threads=4, batch_size=10, coalesce_seconds=1.0)
    queue.start()
    for n in range(1, 6):
        assert queue.offer(_ref(n))
        time.sleep(0.02)  # arriving one by one, all within the window
    assert queue.wait_idle(10)
    assert dispatcher.batches == [[1, 2, 3, 4, 5]]
    assert queue.close(1) == 0


def test_without_a_wait_only_the_events_already_queued_go_on_together() -> None:
    class HoldsTheFirst(BatchRecorder):
        def __init__(self) -> None:
            super().__init__()
            self.started, self.release = threading.Event(), threading.Event()

        def dispatch(self, event: object) -> None:
            self.started.set()
            assert self.release.wait(30), "never released"
            super().dispatch(event)

    dispatcher = HoldsTheFirst()
    queue = DispatchQueue(dispatcher, threads=1, batch_size=10)
    assert queue.offer(_ref(1))
    assert dispatcher.started.wait(10)  # the thread holds event 1 alone; 2-4 queue up
    for n in (2, 3, 4):
        assert queue.offer(_ref(n))
    dispatcher.release.set()
    assert queue.wait_idle(10)
    assert dispatcher.ids == [1] and dispatcher.batches == [[2, 3, 4]]
    assert queue.close(1) == 0


def test_a_coalesced_hand_off_that_fails_leaves_each_of_its_events_to_the_sweep(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = BatchRecorder(refuse=frozenset({2, 3}))
    queue = DispatchQueue(dispatcher, threads=1, batch_size=3, coalesce_seconds=5)
    with caplog.at_level(logging.ERROR):
        for n in (1, 2, 3):
            assert queue.offer(_ref(n))
        assert queue.wait_idle(10)
    assert dispatcher.batches == [[1, 2, 3]]
    failed = [r.getMessage() for r in caplog.records if "dispatch failed" in r.getMessage()]
    assert [m.split()[2] for m in failed] == ["id=2", "id=3"]
    assert all("dispatch_lost" in m and "broker gone" in m for m in failed)
    assert queue.close(1) == 0

"""Races with real parallel workers: threads released together, each on its own connection.

On SQLite these run against a file database (BEGIN IMMEDIATE serialises the writers); on
PostgreSQL and MariaDB the claims really run concurrently.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.handlers import HandlerContext, HandlerRegistry, default_registry
from payments_pipeline.models import (
    PROVIDERS,
    EventStatus,
    GateOutcome,
    ProcessOutcome,
    Provider,
    utcnow,
)
from payments_pipeline.processing import process_event, process_events
from payments_pipeline.sweep import SweepParams, run_sweep

from .helpers import (
    RecordingDispatcher,
    ago,
    fetch_event,
    make_settings,
    receive_and_dispatch,
    stripe_payload,
)

T = TypeVar("T")


def run_together(n: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(i)` in n threads that all start at the same instant."""
    barrier = threading.Barrier(n)

    def go(i: int) -> T:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


class CountingHandlers:
    """A registry whose `payment_intent.succeeded` handlers (both providers) count how many times
    each event was applied, from any thread."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.registry = HandlerRegistry()
        for provider in PROVIDERS:
            self.registry.register(provider, "payment_intent.succeeded", self._count)

    def _count(self, ctx: HandlerContext) -> None:
        with self._lock:
            self.counts[ctx.event.id] += 1


@pytest.fixture
def counting() -> CountingHandlers:
    return CountingHandlers()


def test_eight_gate_callers_dispatch_one_event_once(engine: Engine) -> None:
    dispatcher = RecordingDispatcher()
    payload = stripe_payload("evt_race")
    for round_ in range(3):  # a few rounds: a race that is won by luck once rarely is thrice
        key = f"evt_race_{round_}"
        results = run_together(
            8,
            lambda _i, key=key: receive_and_dispatch(
                engine,
                dispatcher,
                provider="stripe",
                provider_event_id=key,
                event_type="payment_intent.succeeded",
                payload=payload,
                minutes=10,
            ),
        )
        outcomes = Counter(r.outcome for r in results)
        assert outcomes == {GateOutcome.DISPATCHED: 1, GateOutcome.RECEIVED: 7}
        assert sum(r.created for r in results) == 1
        assert len({r.event.id for r in results}) == 1
    assert len(dispatcher.ids) == 3 and len(set(dispatcher.ids)) == 3
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(store.webhook_events)).scalar_one()
            == 3
        )


def _seed_stuck(engine: Engine, n: int) -> list[int]:
    now = utcnow()
    reasons = [
        {},  # dispatched_at_null
        {"dispatched_at": ago(minutes=30)},  # dispatch_lost
        {"status": "failed", "attempts": 1, "dispatched_at": ago(minutes=30)},  # failed_old
        {
            "status": "processing",
            "attempts": 1,
            "dispatched_at": ago(hours=2),
            "processing_started_at": ago(hours=2),
        },  # processing_stalled
    ]
    rows = [
        {
            "provider": ("stripe", "monetbil")[i % 2],
            "provider_event_id": f"e{i}",
            "event_type": "payment_intent.succeeded",
            "payload": "{}",
            "created_at": now,
            "updated_at": now,
            **reasons[i % 4],
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        for start in range(0, n, 1000):
            store.insert_events(conn, rows=rows[start : start + 1000])
        return list(conn.execute(sa.select(store.webhook_events.c.id)).scalars())


def test_four_concurrent_sweeps_dispatch_each_event_once(engine: Engine) -> None:
    ids = _seed_stuck(engine, 3000)
    dispatchers = [RecordingDispatcher() for _ in range(4)]
    summaries = run_together(
        4, lambda i: run_sweep(engine, SweepParams(minutes=10, batch_size=250), dispatchers[i])
    )
    dispatched = [event_id for d in dispatchers for event_id in d.ids]
    assert sum(s.total.dispatched for s in summaries) == len(ids) == 3000
    assert sorted(dispatched) == sorted(ids)  # every event once, none twice
    for s in summaries:
        assert s.total.scanned == s.total.dispatched + s.total.skipped
    with engine.connect() as conn:
        audit = (
            conn.execute(
                sa.select(store.sweep_events.c.event_id).where(
                    store.sweep_events.c.outcome == "dispatched"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(audit) == sorted(ids)


def test_stale_worker_blocked_in_its_handler_is_fenced_out(engine: Engine) -> None:
    """A worker whose handler hangs past the processing timeout loses the event to the sweep;
    when it wakes up, its commit is refused and its payment write rolls back."""
    if engine.dialect.name == "sqlite":
        # One writer at a time: the hung handler's transaction holds SQLite's write lock, so the
        # sweep could not run until it ends. The sequential variant in test_processing covers it.
        return
    settings = make_settings(engine, processing_timeout_minutes=1)
    result = gate.receive(
        engine,
        provider="stripe",
        provider_event_id="evt_hang",
        event_type="payment_intent.succeeded",
        payload=stripe_payload("evt_hang", reference="pi_hang", amount=500),
        minutes=10,
    )
    in_handler, release = threading.Event(), threading.Event()
    hanging = HandlerRegistry()

    def hang(ctx: HandlerContext) -> None:
        ctx.conn.execute(
            sa.insert(store.payments).values(
                provider="stripe",
                reference="pi_hang",
                status="failed",
                amount=-1,
                created_at=ctx.now,
                updated_at=ctx.now,
            )
        )
        in_handler.set()
        assert release.wait(30)

    hanging.register(Provider.STRIPE, "payment_intent.succeeded", hang)
    with ThreadPoolExecutor(max_workers=1) as pool:
        stale = pool.submit(
            process_event, engine, result.event.id, settings=settings, registry=hanging
        )
        assert in_handler.wait(30)
        with engine.begin() as conn:  # the attempt started "2 minutes ago": past the timeout
            conn.execute(
                sa.update(store.webhook_events).values(processing_started_at=ago(minutes=2))
            )
        summary = run_sweep(
            engine, SweepParams(processing_timeout_minutes=1), RecordingDispatcher()
        )
        assert summary.total.dispatched == 1
        # The new worker's handler would wait on the stale insert's lock: let the stale one end.
        release.set()
        assert stale.result(timeout=30) is ProcessOutcome.STALE
    assert (
        process_event(engine, result.event.id, settings=settings, registry=default_registry())
        is ProcessOutcome.PROCESSED
    )
    with engine.connect() as conn:
        payment = store.get_payment(conn, provider=Provider.STRIPE, reference="pi_hang")
    assert payment is not None and payment.amount == 500 and payment.status.value == "succeeded"
    event = fetch_event(engine, result.event.id)
    assert event.status is EventStatus.PROCESSED and event.attempts == 2


def test_parallel_processing_claims_each_event_once(
    engine: Engine, counting: CountingHandlers
) -> None:
    settings = make_settings(engine)
    ids = _seed_stuck(engine, 40)
    registry, counts = counting.registry, counting.counts
    outcomes = run_together(
        4, lambda _i: [process_event(engine, i, settings=settings, registry=registry) for i in ids]
    )
    processed = sum(o is ProcessOutcome.PROCESSED for per_worker in outcomes for o in per_worker)
    claimable = [i for i in ids if fetch_event(engine, i).status is EventStatus.PROCESSED]
    assert processed == len(claimable) == 30  # the 10 stalled `processing` rows are not claimable
    assert all(counts[i] == 1 for i in claimable)


def test_parallel_messages_of_overlapping_ids_apply_each_event_once(
    engine: Engine, counting: CountingHandlers
) -> None:
    """Four Celery-like consumers, each with every id in messages of its own cut: each message's
    claim is set-based and skips rows another holds, so each claimable event is applied once."""
    settings = make_settings(engine)
    ids = _seed_stuck(engine, 80)
    registry, counts = counting.registry, counting.counts

    def consume(worker: int) -> list[ProcessOutcome]:
        size = 7 + worker * 5  # messages cut differently per consumer: overlapping id sets
        order = ids if worker % 2 == 0 else ids[::-1]
        outcomes: list[ProcessOutcome] = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            outcomes += process_events(engine, chunk, settings=settings, registry=registry).values()
        return outcomes

    outcomes = run_together(4, consume)
    processed = sum(o is ProcessOutcome.PROCESSED for per_worker in outcomes for o in per_worker)
    claimable = [i for i in ids if fetch_event(engine, i).status is EventStatus.PROCESSED]
    assert processed == len(claimable) == 60  # the 20 stalled `processing` rows are not claimable
    assert all(counts[i] == 1 for i in claimable) and sum(counts.values()) == 60

"""Processing: the claim, the attempt fence, backoff, dead, unknown types, payments effects."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.config import Settings
from payments_pipeline.handlers import HandlerContext, HandlerRegistry, default_registry
from payments_pipeline.models import (
    EventStatus,
    PaymentStatus,
    ProcessOutcome,
    Provider,
    SweepReason,
    utcnow,
)
from payments_pipeline.processing import (
    PermanentEventError,
    backoff,
    claim_batch,
    complete_attempt,
    complete_attempts,
    process_event,
    process_events,
    start_attempt,
)
from payments_pipeline.replay import ByHand, replay_events, select_dead
from payments_pipeline.sweep import SweepParams, run_sweep

from .conftest import EventFactory
from .helpers import (
    RecordingDispatcher,
    ago,
    deliver,
    fetch_event,
    make_settings,
    monetbil_payload,
    redeliver,
    stripe_payload,
)


def _payment(engine: Engine, provider: Provider, reference: str):
    with engine.connect() as conn:
        return store.get_payment(conn, provider=provider, reference=reference)


def _ledger_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(store.payment_ledger)).scalar_one()
        )


def _failing_registry(exc: Exception) -> HandlerRegistry:
    registry = HandlerRegistry()

    def boom(ctx: HandlerContext) -> None:
        raise exc

    registry.register(Provider.STRIPE, "payment_intent.succeeded", boom)
    return registry


def test_processing_applies_the_payment_once(engine: Engine, event_factory: EventFactory) -> None:
    settings = make_settings(engine)
    event_id = event_factory(
        Provider.STRIPE, payload=stripe_payload("evt_a", reference="pi_a", amount=4200)
    )
    assert (
        process_event(engine, event_id, settings=settings, registry=default_registry())
        is ProcessOutcome.PROCESSED
    )
    # A second processing of the same event is not claimable: processed is final.
    assert (
        process_event(engine, event_id, settings=settings, registry=default_registry())
        is ProcessOutcome.NOT_CLAIMED
    )
    payment = _payment(engine, Provider.STRIPE, "pi_a")
    assert payment is not None
    assert (payment.status, payment.amount, payment.currency) == (
        PaymentStatus.SUCCEEDED,
        4200,
        "eur",
    )
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.PROCESSED and event.attempts == 1 and event.processed_at
    assert _ledger_count(engine) == 1


def test_monetbil_success_then_duplicate(engine: Engine) -> None:
    settings = make_settings(engine)
    payload = monetbil_payload("tx_9", "1", payment_ref="order-9", amount="2500")
    results = [deliver(engine, "monetbil", "tx_9", "payment.success", payload) for _ in range(2)]
    assert [r.should_dispatch for r in results] == [True, False]
    process_event(engine, results[0].event.id, settings=settings, registry=default_registry())
    payment = _payment(engine, Provider.MONETBIL, "order-9")
    assert (
        payment is not None and payment.status is PaymentStatus.SUCCEEDED and payment.amount == 2500
    )
    again = deliver(engine, "monetbil", "tx_9", "payment.success", monetbil_payload("tx_9"))
    assert again.outcome.value == "already_processed"


def test_unknown_event_type_is_processed_without_effect(
    engine: Engine, event_factory: EventFactory
) -> None:
    event_id = event_factory(
        Provider.STRIPE, event_type="customer.created", payload='{"id": "evt_c"}'
    )
    outcome = process_event(
        engine, event_id, settings=make_settings(engine), registry=default_registry()
    )
    assert outcome is ProcessOutcome.PROCESSED
    assert _ledger_count(engine) == 0
    with engine.connect() as conn:
        assert store.list_payments(conn) == []


def _redispatch_after_backoff(engine: Engine, event_id: int) -> None:
    """Time-travel past the backoff, then let a provider retry hit the gate's claim 2."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(store.webhook_events)
            .where(store.webhook_events.c.id == event_id)
            .values(
                dispatched_at=ago(minutes=90),
                processing_started_at=ago(minutes=89),
                next_attempt_at=ago(minutes=1),
            )
        )
    again = redeliver(engine, event_id)
    assert again.outcome.value == "redispatched"


def test_failure_backs_off_then_dies(engine: Engine, event_factory: EventFactory) -> None:
    settings = make_settings(engine, max_attempts=3, stuck_requeue_minutes=10)
    registry = _failing_registry(RuntimeError("upstream timeout"))
    event_id = event_factory(Provider.STRIPE)
    delays = []
    for n, expected in enumerate(
        (ProcessOutcome.FAILED, ProcessOutcome.FAILED, ProcessOutcome.DEAD)
    ):
        if n:
            _redispatch_after_backoff(engine, event_id)
        assert process_event(engine, event_id, settings=settings, registry=registry) is expected
        event = fetch_event(engine, event_id)
        if event.next_attempt_at:
            delays.append(event.next_attempt_at - event.updated_at)
        assert event.last_error == "RuntimeError: upstream timeout"
    assert delays == [dt.timedelta(minutes=10), dt.timedelta(minutes=20)]
    event = fetch_event(engine, event_id)
    assert (
        event.status is EventStatus.DEAD and event.attempts == 3 and event.next_attempt_at is None
    )
    # Dead is final for processing: no claim.
    assert (
        process_event(engine, event_id, settings=settings, registry=registry)
        is ProcessOutcome.NOT_CLAIMED
    )


def test_a_failed_event_is_not_retried_without_a_new_dispatch(
    engine: Engine, event_factory: EventFactory
) -> None:
    """A second worker holding the id from a stale batch, or a duplicate dispatch, must not start
    attempt 2 before a claim re-dispatched the event (after its backoff)."""
    settings = make_settings(engine)
    registry = _failing_registry(RuntimeError("upstream timeout"))
    event_id = event_factory(Provider.STRIPE, dispatched_at=ago(seconds=1))
    assert (
        process_event(engine, event_id, settings=settings, registry=registry)
        is ProcessOutcome.FAILED
    )
    assert (
        process_event(engine, event_id, settings=settings, registry=registry)
        is ProcessOutcome.NOT_CLAIMED
    )
    assert fetch_event(engine, event_id).attempts == 1
    _redispatch_after_backoff(engine, event_id)
    assert (
        process_event(engine, event_id, settings=settings, registry=default_registry())
        is ProcessOutcome.PROCESSED
    )


def test_an_attempt_stamped_before_its_dispatch_still_consumes_it(
    engine: Engine, event_factory: EventFactory
) -> None:
    """Clocks are not an order: a worker reads its clock, is descheduled, and claims the event
    after a gate stamped `dispatched_at` later than that reading (seen in the soak on a loaded
    machine). The failed attempt must still have consumed the dispatch: no attempt 2 before a
    claim hands the event on again."""
    settings = make_settings(engine)
    registry = _failing_registry(RuntimeError("upstream timeout"))
    event_id = event_factory(Provider.STRIPE, dispatched_at=ago(seconds=1))
    early = ago(seconds=3)  # read before the dispatch was stamped
    assert (
        process_event(engine, event_id, settings=settings, registry=registry, now_fn=lambda: early)
        is ProcessOutcome.FAILED
    )
    assert (
        process_event(engine, event_id, settings=settings, registry=registry)
        is ProcessOutcome.NOT_CLAIMED
    )
    assert claim_batch(engine, settings=settings, limit=10) == []
    assert fetch_event(engine, event_id).attempts == 1


def test_a_batch_attempt_stamped_before_its_dispatch_still_consumes_it(
    engine: Engine, event_factory: EventFactory
) -> None:
    """The same for the table worker's batch claim and group commit."""
    settings = make_settings(engine)
    registry = _failing_registry(RuntimeError("upstream timeout"))
    event_id = event_factory(Provider.STRIPE, dispatched_at=ago(seconds=1))
    batch = claim_batch(engine, settings=settings, limit=10, now=ago(seconds=3))
    assert [a.event.id for a in batch] == [event_id]
    assert complete_attempts(engine, batch, settings=settings, registry=registry) == [
        ProcessOutcome.FAILED
    ]
    assert claim_batch(engine, settings=settings, limit=10) == []
    assert fetch_event(engine, event_id).attempts == 1
    _redispatch_after_backoff(engine, event_id)
    again = claim_batch(engine, settings=settings, limit=10)
    assert [a.number for a in again] == [2]


def test_every_hand_on_opens_exactly_one_attempt(
    engine: Engine, event_factory: EventFactory, processing_event: EventFactory
) -> None:
    """Each claim that hands a waiting event on (the sweep's four reasons, the gate's claims, a
    replay) lets exactly one attempt start, whatever the clocks said; the gate's claim 1 on a row
    being processed keeps that attempt's start, the sweep's stall clock."""
    settings = make_settings(engine, stuck_requeue_minutes=10)
    old = ago(minutes=90)
    by_reason = {
        SweepReason.DISPATCHED_AT_NULL: event_factory(created_at=old),
        SweepReason.DISPATCH_LOST: event_factory(dispatched_at=old, created_at=old),
        SweepReason.FAILED_OLD: event_factory(
            status=EventStatus.FAILED,
            attempts=1,
            dispatched_at=old,
            processing_started_at=ago(seconds=1),  # a later clock than the sweep's claim below
            next_attempt_at=old,
            created_at=old,
        ),
        SweepReason.PROCESSING_STALLED: processing_event(
            started=old, dispatched_at=old, created_at=old
        ),
    }
    summary = run_sweep(engine, SweepParams(minutes=10), RecordingDispatcher())
    assert {e.event.id: e.reason for e in summary.events} == {v: k for k, v in by_reason.items()}
    for event_id in by_reason.values():
        assert fetch_event(engine, event_id).processing_started_at is None
        assert start_attempt(engine, event_id, settings=settings) is not None
        assert start_attempt(engine, event_id, settings=settings) is None  # one per hand-on

    processing = event_factory(
        status=EventStatus.PROCESSING, attempts=1, processing_started_at=old, created_at=old
    )
    with engine.begin() as conn:
        assert store.claim_undispatched(conn, event_id=processing, now=utcnow())
    assert fetch_event(engine, processing).processing_started_at == old

    dead = event_factory(
        status=EventStatus.DEAD, attempts=5, dispatched_at=old, processing_started_at=ago(seconds=1)
    )
    replayed = replay_events(
        engine, [dead], RecordingDispatcher(), by=ByHand(SweepParams())
    ).replayed
    assert [e.id for e in replayed] == [dead]
    assert start_attempt(engine, dead, settings=settings, now=old) is not None
    assert start_attempt(engine, dead, settings=settings) is None


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, minutes=10, cap_minutes=60).total_seconds() / 60 for n in range(1, 6)] == [
        10,
        20,
        40,
        60,
        60,
    ]


def test_permanent_error_is_dead_at_once(engine: Engine, event_factory: EventFactory) -> None:
    event_id = event_factory(Provider.STRIPE)
    registry = _failing_registry(PermanentEventError("unknown account"))
    assert (
        process_event(engine, event_id, settings=make_settings(engine), registry=registry)
        is ProcessOutcome.DEAD
    )


def test_malformed_payload_is_dead_at_once(engine: Engine, event_factory: EventFactory) -> None:
    event_id = event_factory(Provider.STRIPE, payload="{not json")
    outcome = process_event(
        engine, event_id, settings=make_settings(engine), registry=default_registry()
    )
    assert outcome is ProcessOutcome.DEAD
    assert "not json" not in (fetch_event(engine, event_id).last_error or "")


def test_worker_crashes_exhaust_the_budget(engine: Engine, event_factory: EventFactory) -> None:
    """A poison event that kills its worker every time ends dead instead of looping forever."""
    settings = make_settings(engine, max_attempts=2)
    event_id = event_factory(Provider.STRIPE, status=EventStatus.RECEIVED, attempts=2)
    assert (
        process_event(engine, event_id, settings=settings, registry=default_registry())
        is ProcessOutcome.NOT_CLAIMED
    )
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.DEAD and "gave up after 2 attempts" in (
        event.last_error or ""
    )


def test_a_message_of_ids_starts_the_attempts_awaiting_and_commits_them_together(
    engine: Engine, event_factory: EventFactory, processing_event: EventFactory
) -> None:
    """`process_events` (a Celery message's ids): one claim takes the ids that await an attempt;
    the others are `not_claimed`, and one whose budget is spent is buried `dead`, as one event's
    claim does. A failing handler fails its event alone."""
    settings = make_settings(engine, max_attempts=2)
    waiting = [event_factory(Provider.STRIPE, dispatched_at=ago(seconds=1)) for _ in range(3)]
    monetbil = event_factory(Provider.MONETBIL, dispatched_at=ago(seconds=1))
    done = event_factory(Provider.STRIPE, status=EventStatus.PROCESSED, attempts=1)
    held = processing_event(Provider.STRIPE, started=ago(seconds=1), dispatched_at=ago(seconds=2))
    spent = event_factory(Provider.STRIPE, attempts=2, dispatched_at=ago(seconds=1))
    registry = default_registry()

    def refuse(ctx: HandlerContext) -> None:
        raise RuntimeError("monetbil is down")

    registry.register(Provider.MONETBIL, "payment.success", refuse)
    ids = [spent, done, *waiting, held, monetbil]
    outcomes = process_events(engine, ids, settings=settings, registry=registry)
    assert outcomes == {
        spent: ProcessOutcome.NOT_CLAIMED,
        done: ProcessOutcome.NOT_CLAIMED,
        **dict.fromkeys(waiting, ProcessOutcome.PROCESSED),
        held: ProcessOutcome.NOT_CLAIMED,
        monetbil: ProcessOutcome.FAILED,
    }
    assert [fetch_event(engine, i).attempts for i in waiting] == [1, 1, 1]
    assert _ledger_count(engine) == 3
    assert fetch_event(engine, monetbil).status is EventStatus.FAILED
    assert fetch_event(engine, spent).status is EventStatus.DEAD
    assert (fetch_event(engine, held).status, fetch_event(engine, held).attempts) == (
        EventStatus.PROCESSING,
        1,
    )
    # The same message again (a redelivery): nothing awaits an attempt, nothing applied twice.
    again = process_events(engine, ids, settings=settings, registry=registry)
    assert set(again.values()) == {ProcessOutcome.NOT_CLAIMED}
    assert _ledger_count(engine) == 3


def test_the_single_claim_returns_the_event_with_its_attempt_number(
    engine: Engine, event_factory: EventFactory
) -> None:
    """`store.claim_for_processing` starts the attempt and returns the event in one statement
    (two on MySQL/MariaDB); None, changing nothing, when the event does not await an attempt."""
    event_id = event_factory(Provider.STRIPE, attempts=3, dispatched_at=ago(seconds=1))
    with engine.begin() as conn:
        event = store.claim_for_processing(conn, event_id=event_id, now=utcnow(), max_attempts=10)
    assert event is not None
    assert (event.id, event.attempts, event.status) == (event_id, 4, EventStatus.PROCESSING)
    assert event.provider_event_id == fetch_event(engine, event_id).provider_event_id
    assert event.processing_started_at is not None
    with engine.begin() as conn:
        again = store.claim_for_processing(conn, event_id=event_id, now=utcnow(), max_attempts=10)
    assert again is None and fetch_event(engine, event_id).attempts == 4


def test_stale_worker_cannot_commit_after_a_stall_is_reclaimed(
    engine: Engine, event_factory: EventFactory
) -> None:
    settings = make_settings(engine, processing_timeout_minutes=30)
    event_id = event_factory(
        Provider.STRIPE, payload=stripe_payload("evt_s", reference="pi_s", amount=100)
    )
    stale = start_attempt(engine, event_id, settings=settings, now=ago(hours=1))
    assert stale is not None and stale.number == 1
    # The sweep sees it stalled and moves it back to received in the claiming UPDATE.
    summary = run_sweep(engine, SweepParams(processing_timeout_minutes=30), RecordingDispatcher())
    assert [e.reason for e in summary.events] == [SweepReason.PROCESSING_STALLED]
    # A fresh worker takes it (attempt 2), applying a different amount via its own handler.
    registry = default_registry()
    assert (
        process_event(engine, event_id, settings=settings, registry=registry)
        is ProcessOutcome.PROCESSED
    )
    # The stale worker wakes up and tries to commit: fenced out, its effects roll back.
    marker = HandlerRegistry()

    def write_bogus(ctx: HandlerContext) -> None:
        ctx.conn.execute(sa.update(store.payments).values(amount=-1))

    marker.register(Provider.STRIPE, "payment_intent.succeeded", write_bogus)
    assert (
        complete_attempt(engine, stale, settings=settings, registry=marker) is ProcessOutcome.STALE
    )
    payment = _payment(engine, Provider.STRIPE, "pi_s")
    assert payment is not None and payment.amount == 100
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.PROCESSED and event.attempts == 2


def test_a_stale_attempt_that_fails_is_stale_and_says_so(
    engine: Engine, event_factory: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker frozen past the processing timeout wakes to a connection the server ended
    # (idle-in-transaction timeout): its attempt fails instead of reaching the fence. The
    # sweep re-claimed the event meanwhile, so the failure must not be recorded over it.
    settings = make_settings(engine, processing_timeout_minutes=30)
    event_id = event_factory(Provider.STRIPE)
    stale = start_attempt(engine, event_id, settings=settings, now=ago(hours=1))
    assert stale is not None
    run_sweep(engine, SweepParams(processing_timeout_minutes=30), RecordingDispatcher())
    broken = HandlerRegistry()

    def connection_gone(ctx: HandlerContext) -> None:
        raise RuntimeError("terminating connection due to idle-in-transaction timeout")

    broken.register(Provider.STRIPE, "payment_intent.succeeded", connection_gone)
    with caplog.at_level(logging.WARNING, logger="payments_pipeline.processing"):
        outcome = complete_attempt(engine, stale, settings=settings, registry=broken)
    assert outcome is ProcessOutcome.STALE
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.RECEIVED and event.last_error is None
    assert f"webhook event {event_id} attempt 1 was re-claimed meanwhile" in caplog.text
    assert "idle-in-transaction timeout" in caplog.text


def _deliver_and_process(
    engine: Engine, settings: Settings, *deliveries: tuple[str, str, str]
) -> list[ProcessOutcome]:
    """Deliver each Stripe (key, event type, payload) and process it at once, in this order."""
    outcomes = []
    for key, event_type, payload in deliveries:
        event_id = deliver(engine, "stripe", key, event_type, payload).event.id
        outcomes.append(
            process_event(engine, event_id, settings=settings, registry=default_registry())
        )
    return outcomes


def test_out_of_order_refund_before_success_ends_refunded(engine: Engine) -> None:
    settings = make_settings(engine)
    refund = stripe_payload("evt_r", "charge.refunded", reference="pi_o", created=1_700_000_100)
    success = stripe_payload(
        "evt_ok", "payment_intent.succeeded", reference="pi_o", created=1_700_000_000
    )
    outcomes = _deliver_and_process(
        engine,
        settings,
        ("evt_r", "charge.refunded", refund),
        ("evt_ok", "payment_intent.succeeded", success),
    )
    assert outcomes == [ProcessOutcome.PROCESSED, ProcessOutcome.PROCESSED]
    payment = _payment(engine, Provider.STRIPE, "pi_o")
    assert payment is not None and payment.status is PaymentStatus.REFUNDED
    assert _ledger_count(engine) == 1  # the late success had nothing left to do


def test_older_failure_never_overwrites_newer_success(engine: Engine) -> None:
    settings = make_settings(engine)
    newer_ok = stripe_payload(
        "evt_2", "payment_intent.succeeded", reference="pi_f", created=1_700_000_200
    )
    older_fail = stripe_payload(
        "evt_1", "payment_intent.payment_failed", reference="pi_f", created=1_700_000_100
    )
    _deliver_and_process(
        engine,
        settings,
        ("evt_2", "payment_intent.succeeded", newer_ok),
        ("evt_1", "payment_intent.payment_failed", older_fail),
    )
    payment = _payment(engine, Provider.STRIPE, "pi_f")
    assert payment is not None and payment.status is PaymentStatus.SUCCEEDED


def test_select_dead_takes_a_providers_dead_events_since_a_date(
    engine: Engine, event_factory: EventFactory
) -> None:
    dead = [event_factory(Provider.STRIPE, status=EventStatus.DEAD) for _ in range(3)]
    older = event_factory(Provider.STRIPE, status=EventStatus.DEAD)
    other = event_factory(Provider.MONETBIL, status=EventStatus.DEAD)
    event_factory(Provider.STRIPE, status=EventStatus.FAILED)
    with engine.begin() as conn:  # `older` died two days ago
        conn.execute(
            sa.update(store.webhook_events)
            .where(store.E.id == older)
            .values(updated_at=ago(days=2))
        )
    since = ago(days=1)
    picked = select_dead(engine, providers=[Provider.STRIPE], since=since, limit=2)
    assert picked.event_ids == tuple(dead[:2]) and picked.total == 3 and picked.left_out == 1
    both = select_dead(engine, providers=list(Provider), since=ago(days=3), limit=10)
    assert both.event_ids == (*dead, older, other) and both.left_out == 0
    with pytest.raises(ValueError, match="limit must be >= 1"):
        select_dead(engine, providers=[Provider.STRIPE], since=since, limit=0)


def test_replay_of_processed_event_never_applies_twice(
    engine: Engine, event_factory: EventFactory
) -> None:
    settings = make_settings(engine, max_attempts=2)
    event_id = event_factory(Provider.STRIPE, payload=stripe_payload("evt_p", reference="pi_p"))
    process_event(engine, event_id, settings=settings, registry=default_registry())
    dead_id = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=2)
    fresh_id = event_factory(Provider.STRIPE)
    dispatcher = RecordingDispatcher()
    result = replay_events(
        engine, [event_id, dead_id, fresh_id, 999_999], dispatcher, by=ByHand(SweepParams())
    )
    assert sorted(r.id for r in result.replayed) == sorted([event_id, dead_id])
    assert [(r.event_id, r.why) for r in result.refused] == [
        (fresh_id, "it is received: only dead, processed or expired stuck events are replayed"),
        (999_999, "unknown event id"),
    ]
    for ref in dispatcher.events:
        assert (
            process_event(engine, ref.id, settings=settings, registry=default_registry())
            is ProcessOutcome.PROCESSED
        )
    assert _ledger_count(engine) == 2  # the replayed processed event added nothing
    dead = fetch_event(engine, dead_id)
    assert dead.attempts == 3 and dead.status is EventStatus.PROCESSED  # budget renewed, token kept
    with engine.connect() as conn:
        audit = conn.execute(
            sa.select(store.sweep_events.c.event_id, store.sweep_events.c.reason)
        ).all()
    assert sorted(audit) == sorted([(event_id, "replay"), (dead_id, "replay")])


@pytest.mark.parametrize("provider", ["stripe", "monetbil"])
def test_gate_rejects_bad_keys(sqlite_engine: Engine, provider: str) -> None:
    with pytest.raises(ValueError, match="provider_event_id"):
        gate.receive(
            sqlite_engine,
            provider=provider,
            provider_event_id="x" * 256,
            event_type="t",
            payload="",
            minutes=10,
        )


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_claims_commit_without_a_flush_and_effects_with_one(
    engine: Engine, event_factory: EventFactory
) -> None:
    """The three processing claims (one event, a message's ids, the table worker's batch) commit
    with `synchronous_commit = off`; the transactions that write the payment and the ledger
    never do, so an effect is durable only with its claim before it in the log."""
    settings = make_settings(engine)
    transactions: list[list[str]] = []

    def began(conn: sa.Connection) -> None:
        transactions.append([])

    def executed(conn, cursor, statement: str, *args: object) -> None:
        transactions[-1].append(statement)

    sa.event.listen(engine, "begin", began)
    sa.event.listen(engine, "before_cursor_execute", executed)
    try:
        ids = [
            event_factory(
                Provider.STRIPE,
                payload=stripe_payload(f"evt_f{i}", reference=f"pi_f{i}", amount=100 + i),
                dispatched_at=ago(seconds=1),
            )
            for i in range(4)
        ]
        transactions.clear()
        registry = default_registry()
        assert process_event(engine, ids[0], settings=settings, registry=registry) is (
            ProcessOutcome.PROCESSED
        )
        first = process_events(engine, ids[1:3], settings=settings, registry=registry)
        assert set(first.values()) == {ProcessOutcome.PROCESSED}
        again = process_events(engine, ids[1:3], settings=settings, registry=registry)  # redelivery
        assert set(again.values()) == {ProcessOutcome.NOT_CLAIMED}
        attempts = claim_batch(engine, settings=settings, limit=10)
        assert [a.event.id for a in attempts] == [ids[3]]
        complete_attempts(engine, attempts, settings=settings, registry=registry)
    finally:
        sa.event.remove(engine, "begin", began)
        sa.event.remove(engine, "before_cursor_execute", executed)

    def unflushed(tx: list[str]) -> bool:
        return any("synchronous_commit" in s for s in tx)

    def writes_effects(tx: list[str]) -> bool:
        return any(s.lstrip().upper().startswith("INSERT INTO PAYMENT") for s in tx)

    assert sum(map(unflushed, transactions)) == 4  # one, two messages, one batch
    assert sum(map(writes_effects, transactions)) == 3  # one, the first message, the batch
    assert not any(unflushed(tx) and writes_effects(tx) for tx in transactions)
    assert all(
        tx[0] == "SET LOCAL synchronous_commit = off" for tx in transactions if unflushed(tx)
    )
    assert _ledger_count(engine) == 4

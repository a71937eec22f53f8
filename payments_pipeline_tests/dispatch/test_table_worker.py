"""The table engine: set-based batch claims, group commits with a savepoint per event, and real
parallel worker processes that never take the same event."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.handlers import HandlerContext, HandlerRegistry, default_registry
from payments_pipeline.models import EventStatus, PaymentStatus, ProcessOutcome, Provider
from payments_pipeline.processing import claim_batch, complete_attempts
from payments_pipeline.providers import samples
from payments_pipeline.worker import Worker

from ..helpers import ago, fetch_event, make_settings
from ..test_races import run_together


def _seed_claimed(engine: Engine, n: int, *, prefix: str = "evt") -> list[int]:
    """`n` events claimed by the gate and not started: the table engine's queue."""
    now = ago(seconds=5)
    rows = [
        {
            "provider": Provider.STRIPE.value,
            "provider_event_id": f"{prefix}_{i}",
            "event_type": samples.PAYMENT_INTENT_SUCCEEDED,
            "payload": samples.stripe_event(f"{prefix}_{i}", reference=f"pi_{prefix}_{i}"),
            "dispatched_at": now,
            "created_at": now,
        }
        for i in range(n)
    ]
    store.in_transaction(engine, lambda conn: store.insert_events(conn, rows=rows))
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.webhook_events.c.id)).scalars())


def _ledger(engine: Engine) -> Counter[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.payment_ledger.c.webhook_event_id)).scalars()
        return Counter(rows)


def test_concurrent_batch_claims_never_share_an_event(engine: Engine) -> None:
    settings = make_settings(engine)
    ids = _seed_claimed(engine, 120)
    claimed = run_together(4, lambda _i: claim_batch(engine, settings=settings, limit=40))
    taken = Counter(a.event.id for batch in claimed for a in batch)
    assert taken and max(taken.values()) == 1  # no event in two batches
    assert all(a.number == 1 for batch in claimed for a in batch)  # each its first attempt
    for batch in claimed:
        complete_attempts(engine, batch, settings=settings, registry=default_registry())
    rest = claim_batch(engine, settings=settings, limit=200)  # whatever a skip left behind
    complete_attempts(engine, rest, settings=settings, registry=default_registry())
    assert len(taken) + len(rest) == len(ids)
    assert _ledger(engine) == Counter(ids)  # every effect applied, each once
    assert all(fetch_event(engine, i).status is EventStatus.PROCESSED for i in ids)


def test_a_failing_handler_rolls_back_alone(engine: Engine) -> None:
    settings = make_settings(engine)
    ids = _seed_claimed(engine, 5)
    builtin = default_registry()
    registry = HandlerRegistry()
    bad = ids[2]

    def apply_then_fail_once(ctx: HandlerContext) -> None:
        handler = builtin.get(ctx.event.provider, ctx.event.event_type)
        assert handler is not None
        handler(ctx)  # writes the payment and the ledger row ...
        if ctx.event.id == bad:
            raise TimeoutError("bank down")  # ... which must roll back with this event alone

    registry.register(Provider.STRIPE, samples.PAYMENT_INTENT_SUCCEEDED, apply_then_fail_once)
    batch = claim_batch(engine, settings=settings, limit=10)
    outcomes = complete_attempts(engine, batch, settings=settings, registry=registry)
    assert [a.event.id for a in batch] == ids
    assert (
        outcomes
        == [ProcessOutcome.PROCESSED] * 2 + [ProcessOutcome.FAILED] + [ProcessOutcome.PROCESSED] * 2
    )
    failed = fetch_event(engine, bad)
    assert failed.status is EventStatus.FAILED and failed.last_error == "TimeoutError: bank down"
    assert failed.next_attempt_at is not None
    assert _ledger(engine) == Counter(i for i in ids if i != bad)
    with engine.connect() as conn:
        assert store.get_payment(conn, provider=Provider.STRIPE, reference=f"pi_evt_{2}") is None
        paid = store.get_payment(conn, provider=Provider.STRIPE, reference="pi_evt_0")
    assert paid is not None and paid.status is PaymentStatus.SUCCEEDED


def test_a_stale_attempt_in_a_batch_commits_nothing(engine: Engine) -> None:
    settings = make_settings(engine)
    ids = _seed_claimed(engine, 3)
    batch = claim_batch(engine, settings=settings, limit=10)
    stale = ids[1]
    with engine.begin() as conn:  # what the sweep's processing_stalled claim does meanwhile
        conn.execute(
            sa.update(store.webhook_events)
            .where(store.webhook_events.c.id == stale)
            .values(status=EventStatus.RECEIVED.value, processing_started_at=None)
        )
    outcomes = complete_attempts(engine, batch, settings=settings, registry=default_registry())
    assert outcomes == [ProcessOutcome.PROCESSED, ProcessOutcome.STALE, ProcessOutcome.PROCESSED]
    assert _ledger(engine) == Counter([ids[0], ids[2]])
    assert fetch_event(engine, stale).status is EventStatus.RECEIVED


def test_rows_held_by_another_transaction_are_skipped_not_waited_on(
    engine: Engine, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no row locks: BEGIN IMMEDIATE lets one writer in at a time")
    settings = make_settings(engine)
    ids = _seed_claimed(engine, 4)
    held = ids[0]
    with engine.connect() as holder:
        holder.begin()
        holder.execute(
            sa.select(store.webhook_events.c.id)
            .where(store.webhook_events.c.id == held)
            .with_for_update()
        ).all()
        started = time.monotonic()
        batch = claim_batch(engine, settings=settings, limit=10)
        assert time.monotonic() - started < 5
        holder.rollback()
    assert held not in {a.event.id for a in batch} and len(batch) >= 1
    assert claim_batch(engine, settings=settings, limit=10)[0].event.id == held


@pytest.mark.parametrize("backend", ["postgres"], scope="module")  # `backend` is module-scoped here
def test_the_batch_claim_reads_the_queue_in_index_order_even_when_every_row_is_queued(
    engine: Engine,
) -> None:
    """Right after a large backlog is swept, the statistics say nearly every row is `received`:
    the claim must still read the (status, dispatched_at) index in order (its cost follows the
    rows it takes), not a sequential scan that steps over every processed row on each poll."""
    settings = make_settings(engine)
    _seed_claimed(engine, 3000)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE webhook_events"))
    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        if "FOR UPDATE SKIP LOCKED" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        assert len(claim_batch(engine, settings=settings, limit=50)) == 50
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert seen
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        for statement, parameters in seen:
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Index Scan using ix_webhook_events_status_dispatched_at" in plan, plan
            assert "Seq Scan" not in plan, plan
        raw.rollback()


def test_a_spent_budget_is_buried_by_the_worker(engine: Engine, event_factory) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(engine, max_attempts=3)
    spent = event_factory(
        Provider.STRIPE, attempts=3, dispatched_at=ago(minutes=1), processing_started_at=None
    )
    worker = Worker(engine, settings)
    assert worker.run_once() == 0
    assert worker.stats.outcomes == {ProcessOutcome.DEAD: 1}
    event = fetch_event(engine, spent)
    assert event.status is EventStatus.DEAD and "gave up after 3 attempts" in (
        event.last_error or ""
    )


@pytest.mark.parametrize("backend", ["sqlite"], scope="module")  # `backend` is module-scoped here
def test_a_busy_worker_buries_spent_budgets_at_most_every_few_seconds(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short batches are the rule at a steady rate: the burying query runs on the first, then
    not again until BURY_EVERY_SECONDS have passed."""
    from payments_pipeline import worker as worker_module

    calls: list[int] = []
    real = worker_module.bury_exhausted

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "bury_exhausted", counted)
    worker = Worker(engine, make_settings(engine))
    for _ in range(3):
        worker.run_once()
    assert len(calls) == 1
    worker._last_bury -= worker_module.BURY_EVERY_SECONDS  # as if that long had passed
    worker.run_once()
    assert len(calls) == 2


def test_parallel_worker_processes_apply_every_event_once(engine: Engine, tmp_path: Path) -> None:
    """Four real `payments-pipeline worker` processes, all polling, drain one backlog."""
    env = {
        **os.environ,
        "PAYMENTS_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PAYMENTS_DISPATCH": "table",
    }
    exe = str(Path(sys.executable).with_name("payments-pipeline"))
    argv = [exe, "worker", "--batch", "20", "--poll-interval", "0.05"]
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    outputs = []
    with ExitStack() as files:
        procs = [
            subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=files.enter_context(log.open("w")),
                text=True,
            )
            for log in logs
        ]
        ids = _drain_with(procs, logs, engine, outputs)
    assert [p.returncode for p in procs] == [0] * 4
    assert _ledger(engine) == Counter(ids)
    with engine.connect() as conn:
        attempts = conn.execute(sa.select(store.webhook_events.c.attempts)).scalars().all()
    assert set(attempts) == {1}  # no event was ever started twice
    # each prints "worker stopped after N polls: processed X" ("nothing" if it found none)
    processed = sum(int(m[1]) for out in outputs if (m := re.search(r"processed (\d+)", out)))
    assert processed == len(ids)


def _drain_with(
    procs: list[subprocess.Popen[str]], logs: list[Path], engine: Engine, outputs: list[str]
) -> list[int]:
    """Wait until every worker polls, seed the backlog, wait until it is processed, then stop
    every worker by its pid (SIGTERM, then SIGKILL), whatever happened."""
    try:
        deadline = time.monotonic() + 120
        while not all("worker started" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        ids = _seed_claimed(engine, 600, prefix="proc")  # every worker is polling by now
        while True:
            with engine.connect() as conn:
                done = conn.execute(
                    sa.select(sa.func.count()).where(
                        store.webhook_events.c.status == EventStatus.PROCESSED.value
                    )
                ).scalar_one()
            if done == len(ids):
                break
            assert time.monotonic() < deadline, f"only {done} of {len(ids)} processed"
            assert all(p.poll() is None for p in procs), "a worker exited early"
            time.sleep(0.1)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=30)[0])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    return ids

"""The reliability soak, short: the same orchestrator as `python -m soak` (docs/RELIABILITY.md),
25 s of load on PostgreSQL and on MariaDB, chaos on, then settle, verify, report.

Chaos (SIGKILLed workers, cut connections) and the injected handler failures stop 18 s into the
load, or up to 30 s later on a machine so loaded that some kind of fault has not happened by then
(the load is extended by as much). One worker is frozen mid-handler 2-3 s in and woken 95 s
later, after the sweep reclaimed its event (the attempt fence must turn it away). A stalled or
failed event becomes a sweep candidate only a minute after its attempt (the smallest
`PAYMENTS_STUCK_REQUEUE_MINUTES` and processing timeout), so settling is the long part: one
module fixture runs both backends side by side, MariaDB starting 12 s after PostgreSQL, and each
test asserts on its own backend's report, including that the faults really happened, so a soak
that exercised nothing cannot pass. The fast tests at the end show that each check of the
verifier can fail.

Then the same soak on the celery engine, on PostgreSQL, once both are done (`python -m soak
--dispatch celery`): the receiver and the sweeps publish to a private RabbitMQ queue, Celery
workers are SIGKILLed (a pool process or a whole worker, mid-handler), and the verifier adds the
task runs the workers logged (docs/RELIABILITY.md, "The celery soak"). It needs
`PAYMENTS_TEST_CELERY_BROKER_URL` too.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from soak import logscan
from soak.config import SoakConfig
from soak.load import EventRecord
from soak.orchestrator import run_soak
from soak.report import render
from soak.snapshot import EventRow, LedgerRow, LogRow, PaymentRow, Snapshot, SweepEventRow
from soak.stories import Story, StoryFactory
from soak.sweeps import SweepResult
from soak.verify import verify

from .conftest import SERVER_ENV, server_url

BROKER_ENV = "PAYMENTS_TEST_CELERY_BROKER_URL"

DURATION = 25.0
CHAOS_SECONDS = 18.0
GRACE = 30.0  # more chaos (and load) while a kind of fault has not happened yet
STAGGER = 12.0


def short_config(backend: str, url: str) -> SoakConfig:
    return SoakConfig(
        server_url=url,
        duration=DURATION,
        rate=15,
        workers=3,
        serve_workers=2,
        failure_rate=0.2,
        kill_every=(1.0, 3.0),
        cut_every=(1.5, 4.0),
        freeze_every=(2.0, 3.0),
        freeze_for=(95.0, 95.0),
        max_freezes=1,
        sweep_every=(4.0, 8.0),
        concurrent_sweep_chance=0.5,
        chaos_stop_early=DURATION - CHAOS_SECONDS,
        chaos_grace=GRACE,
        settle_timeout=150,
        drain_timeout=30,
        seed=20_240_606 + len(backend),
    )


def celery_config(url: str, broker_url: str) -> SoakConfig:
    """The short soak on the celery engine: Celery workers (2 pool processes each) instead of
    table workers; no freezes (a frozen pool process is a kill for Celery: the soak schedules
    none), the rest as above."""
    return replace(
        short_config("celery", url),
        dispatch="celery",
        broker_url=broker_url,
        workers=2,
        celery_concurrency=2,
        max_freezes=0,
        # Through the soak's TCP proxy: every broker connection cut at once, and the broker
        # unreachable for seconds, each at least once (the grace waits for them).
        broker_cut_every=(3.0, 6.0),
        broker_down_every=(6.0, 10.0),
        broker_down_for=5.0,
    )


@pytest.fixture(scope="module")
def reports() -> Iterator[dict[str, dict[str, Any] | BaseException]]:
    """Run the soak on every configured backend (staggered, in threads); backend -> report."""
    results: dict[str, dict[str, Any] | BaseException] = {}
    threads: list[threading.Thread] = []
    for backend in ("postgres", "mysql"):
        url = server_url(backend)
        if url is None:
            continue

        def run(backend: str = backend, url: str = url) -> None:
            try:
                config = short_config(backend, url)
                results[backend] = run_soak(config, progress=lambda m: print(f"[{backend}] {m}"))
            except BaseException as exc:  # reported by the backend's own test
                results[backend] = exc

        if threads:  # one's load overlaps the other's setup and (mostly idle) settle
            time.sleep(STAGGER)
        thread = threading.Thread(target=run, name=f"soak-{backend}")
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    url, broker = server_url("postgres"), os.environ.get(BROKER_ENV)
    if url is not None and broker:
        try:
            config = celery_config(url, broker)
            results["celery"] = run_soak(config, progress=lambda m: print(f"[celery] {m}"))
        except BaseException as exc:
            results["celery"] = exc
    yield results


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_short_soak_holds_every_invariant(
    backend: str, reports: dict[str, dict[str, Any] | BaseException]
) -> None:
    if server_url(backend) is None:
        pytest.skip(f"{SERVER_ENV[backend]} is not set: no {backend} server to soak")
    result = reports[backend]
    if isinstance(result, BaseException):
        raise result
    print(render(result))
    assert result["violation_count"] == 0, render(result)
    # The faults happened, and the machinery that recovers from them ran.
    assert result["chaos"]["worker_kills"] > 0
    assert result["chaos"]["cut_connections"] > 0
    assert result["chaos"]["injected_handler_failures"] > 0
    assert result["chaos"]["freezes"] == 1
    assert result["chaos"]["stale_attempts_fenced"] >= 1
    assert result["sweeps"]["redispatches"] > 0
    assert result["sweeps"]["sweeps_in_concurrent_groups"] >= 2
    assert result["sweeps"]["final_ok"]
    assert result["deliveries"]["duplicates"] > 0
    assert result["out_of_order_pairs"] > 0
    # Everything sent was accepted, and ended processed or dead.
    events = result["events"]
    assert events["sent"] > 100
    assert events["accepted"] == events["sent"]
    assert set(result["final_states"]) <= {"processed", "dead"}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_short_celery_soak_holds_every_invariant(
    reports: dict[str, dict[str, Any] | BaseException],
) -> None:
    if server_url("postgres") is None:
        pytest.skip(f"{SERVER_ENV['postgres']} is not set: no postgres server to soak")
    if not os.environ.get(BROKER_ENV):
        pytest.skip(f"{BROKER_ENV} is not set: no RabbitMQ for the celery soak")
    result = reports["celery"]
    if isinstance(result, BaseException):
        raise result
    print(render(result))
    assert result["dispatch"] == "celery"
    assert result["violation_count"] == 0, render(result)
    assert result["chaos"]["worker_kills"] > 0  # pool processes or whole workers, SIGKILLed
    assert result["chaos"]["cut_connections"] > 0
    assert result["chaos"]["broker_cut_connections"] > 0
    assert result["chaos"]["broker_outages"] > 0
    assert result["chaos"]["injected_handler_failures"] > 0
    assert result["celery"]["task_runs"] > result["events"]["sent"] * 0.5
    assert result["sweeps"]["final_ok"]
    events = result["events"]
    assert events["sent"] > 100 and events["accepted"] == events["sent"]
    assert set(result["final_states"]) <= {"processed", "dead"}


# --- the checks can fail: each invariant on a hand-made snapshot, no database -----------------


def _world() -> tuple[Snapshot, dict[tuple[str, str], EventRecord], list[Story]]:
    """One Stripe story [succeeded, refunded], both processed, consistent in every table."""
    factory = StoryFactory(
        random.Random(7), stripe_secret="whsec_t", monetbil_secret="m", out_of_order_chance=0
    )
    story = factory.story()
    while story.kind != "succeeded_then_refunded":
        story = factory.story()
    ref, amount = story.reference, story.amount
    e1, e2 = story.events
    events = {
        e1.key: EventRow(1, "stripe", e1.event_id, e1.event_type, "processed", 1),
        e2.key: EventRow(2, "stripe", e2.event_id, e2.event_type, "processed", 2),
    }
    records = {e.key: EventRecord(e, dispatches=1, copies=1, accepted=True) for e in story.events}
    snap = Snapshot(
        events=events,
        payments={("stripe", ref): PaymentRow(9, "stripe", ref, "refunded", amount, 2)},
        ledger=[
            LedgerRow(1, 1, 1, "stripe", ref, None, "succeeded"),
            LedgerRow(2, 2, 2, "stripe", ref, "succeeded", "refunded"),
        ],
        payment_log=[
            LogRow(1, 9, "stripe", ref, None, "succeeded", 1),
            LogRow(2, 9, "stripe", ref, "succeeded", "refunded", 2),
        ],
        sweep_events=[SweepEventRow(1, 2, "failed_old", "dispatched")],
        sweep_runs={1: "succeeded"},
    )
    return snap, records, [story]


def _sweep(events: list[dict[str, Any]]) -> SweepResult:
    return SweepResult(1, "load", 1, 0, 1.0, {"sweep_id": 1, "events": events}, None)


def test_a_consistent_world_has_no_violation() -> None:
    snap, records, stories = _world()
    audit = [{"id": 2, "reason": "failed_old", "outcome": "dispatched"}]
    assert verify(snap, records, stories, [_sweep(audit)]).violations == {}


def test_each_check_catches_its_violation() -> None:
    snap, records, stories = _world()
    (k1, r1), (k2, r2) = snap.events.items()
    payment = next(iter(snap.payments.values()))

    def found(changed: Snapshot, sweeps: Sequence[SweepResult] = ()) -> set[str]:
        return set(verify(changed, records, stories, sweeps).violations)

    stuck = replace(r2, status="failed")
    assert "settled" in found(replace(snap, events={k1: r1, k2: stuck}))
    lost = {k1: r1}
    assert "settled" in found(replace(snap, events=lost))
    wrong = replace(payment, status="succeeded")
    assert "payment_state" in found(replace(snap, payments={("stripe", payment.reference): wrong}))
    twice = [*snap.payment_log, replace(snap.payment_log[1], id=3, old_status="refunded")]
    assert "effects_once" in found(replace(snap, payment_log=twice))
    unlogged = snap.payment_log[:1]  # the refund's ledger row without a committed change
    assert "effects_once" in found(replace(snap, payment_log=unlogged))
    extra_attempt = replace(r1, attempts=2)
    problems = found(replace(snap, events={k1: extra_attempt, k2: r2}))
    assert "attempt_without_dispatch" in problems
    missing = [{"id": 1, "reason": "processing_stalled", "outcome": "dispatched"}]
    assert "sweep_audit" in found(snap, [_sweep(missing)])


def test_the_log_scan_finds_secrets_signatures_and_payloads(tmp_path: Path) -> None:
    sent = "ab" * 32
    log = tmp_path / "serve.err"
    log.write_text(
        "INFO ok line\n"
        "ERROR boom whsec_secret_1\n"
        f"WARNING header t=1,v1={'cd' * 32}\n"
        "INFO body sign=0123456789abcdef0123456789abcdef\n"
        f"INFO token {sent}\n"
        "DEBUG customer soakpayloadXYZ-1@x.invalid\n"
    )
    scan = logscan.scan(
        [log], secrets=["whsec_secret_1"], marker="soakpayloadXYZ", signatures={sent}
    )
    assert scan.lines == 6
    assert [leak.split(":")[1] for leak in scan.leaks] == ["2", "3", "4", "5", "6"]

"""Worker processes with the table as the queue."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.dispatch import TableDispatcher
from payments_pipeline.handlers import HandlerContext, HandlerRegistry
from payments_pipeline.models import EventStatus, PaymentStatus, ProcessOutcome, Provider
from payments_pipeline.sweep import SweepParams, run_sweep
from payments_pipeline.worker import Worker, drain

from .conftest import EventFactory
from .helpers import (
    MetricSamples,
    ago,
    fetch_event,
    make_settings,
    metric_samples,
    metric_value,
    receive_stripe,
)
from .http.support import free_port


def test_claimed_events_are_the_queue(engine: Engine, event_factory: EventFactory) -> None:
    settings = make_settings(engine)
    queued = receive_stripe(engine, "evt_q", reference="pi_q")
    undispatched = event_factory(Provider.STRIPE)  # received, never claimed: the sweep's job
    assert drain(engine, settings) == 1
    assert fetch_event(engine, queued).status is EventStatus.PROCESSED
    assert fetch_event(engine, undispatched).status is EventStatus.RECEIVED
    assert drain(engine, settings) == 0  # processed rows leave the queue


def test_a_failed_event_waits_for_its_redispatch(engine: Engine) -> None:
    settings = make_settings(engine)
    event_id = receive_stripe(engine, "evt_f")
    failing = HandlerRegistry()

    def boom(ctx: HandlerContext) -> None:
        raise TimeoutError("bank down")

    failing.register(Provider.STRIPE, "payment_intent.succeeded", boom)
    worker = Worker(engine, settings, registry=failing)
    assert worker.run_once() == 1 and worker.stats.outcomes == {ProcessOutcome.FAILED: 1}
    assert worker.run_once() == 0  # not queued again by itself
    with engine.begin() as conn:  # backoff over and handed on long ago: failed_old
        conn.execute(
            sa.update(store.webhook_events).values(
                dispatched_at=ago(minutes=30),
                processing_started_at=ago(minutes=29),
                next_attempt_at=ago(minutes=1),
            )
        )
    assert run_sweep(engine, SweepParams(), TableDispatcher()).total.dispatched == 1
    assert drain(engine, settings) == 1
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.PROCESSED and event.attempts == 2


def test_a_worker_killed_mid_event_is_recovered_by_the_sweep(engine: Engine) -> None:
    settings = make_settings(engine, processing_timeout_minutes=1)
    event_id = receive_stripe(engine, "evt_k", reference="pi_k", amount=700)
    url = engine.url.render_as_string(hide_password=False)
    cmd = [sys.executable, "-m", "payments_pipeline_tests.slow_worker", url]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "in-handler"
        finally:
            proc.kill()  # SIGKILL: no cleanup, mid-transaction
            proc.wait(timeout=30)
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.PROCESSING and event.attempts == 1
    with engine.connect() as conn:  # its payment write died with its transaction
        assert store.get_payment(conn, provider=Provider.STRIPE, reference="pi_k") is None
    with engine.begin() as conn:
        conn.execute(sa.update(store.webhook_events).values(processing_started_at=ago(minutes=2)))
    summary = run_sweep(engine, SweepParams(processing_timeout_minutes=1), TableDispatcher())
    assert [e.reason.value for e in summary.events] == ["processing_stalled"]
    assert drain(engine, settings) == 1
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.PROCESSED and event.attempts == 2
    with engine.connect() as conn:
        payment = store.get_payment(conn, provider=Provider.STRIPE, reference="pi_k")
        ledger = conn.execute(
            sa.select(sa.func.count()).select_from(store.payment_ledger)
        ).scalar_one()
    assert (
        payment is not None and payment.status is PaymentStatus.SUCCEEDED and payment.amount == 700
    )
    assert ledger == 1


def test_worker_stops_when_asked(sqlite_engine: Engine) -> None:
    worker = Worker(sqlite_engine, make_settings(sqlite_engine), poll_interval=0.01)
    stats = worker.run(until=lambda: worker.stats.polls >= 3)
    assert stats.polls == 3 and stats.processed == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_worker_sleeps_only_when_the_queue_was_empty(
    engine: Engine, event_factory: EventFactory
) -> None:
    """A batch short of full means events are arriving: poll again at once, not after the poll
    interval (which would add up to that much to their latency)."""
    for _ in range(3):
        event_factory(Provider.STRIPE, dispatched_at=ago(seconds=1))
    worker = Worker(engine, make_settings(engine), batch=2, poll_interval=30)
    started = time.monotonic()
    stats = worker.run(until=lambda: worker.stats.polls >= 2)  # 2 events, then the last one
    assert time.monotonic() - started < 10
    assert stats.polls == 2 and stats.processed == 3


@pytest.mark.parametrize("backend", ["sqlite"])
def test_worker_polls_briefly_right_after_work_and_at_its_interval_when_idle(
    engine: Engine, event_factory: EventFactory
) -> None:
    """After a poll that found events, an empty one waits BUSY_POLL_SECONDS (more may be
    arriving); a worker that found nothing for a while waits its whole poll interval."""
    event_factory(Provider.STRIPE, dispatched_at=ago(seconds=1))
    busy = Worker(engine, make_settings(engine), poll_interval=30)
    started = time.monotonic()
    stats = busy.run(until=lambda: busy.stats.polls >= 3)  # the event, then two empty polls
    assert time.monotonic() - started < 10 and stats.processed == 1
    idle = Worker(engine, make_settings(engine), poll_interval=0.4)
    started = time.monotonic()
    idle.run(until=lambda: idle.stats.polls >= 2)
    assert time.monotonic() - started >= 0.4  # nothing found yet: the whole interval


def test_worker_command_processes_then_stops_on_sigterm(engine: Engine) -> None:
    event_id = receive_stripe(engine, "evt_cli", reference="pi_cli")
    env = {
        **os.environ,
        "PAYMENTS_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PAYMENTS_DISPATCH": "table",
    }
    exe = Path(sys.executable).with_name("payments-pipeline")
    with subprocess.Popen(
        [str(exe), "worker", "--poll-interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 60
        while fetch_event(engine, event_id).status is not EventStatus.PROCESSED:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "processed 1" in out


def _scrape(url: str, proc: subprocess.Popen[str]) -> MetricSamples:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "the worker exited"
        try:
            return metric_samples(httpx.get(url, timeout=5).text)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "no metrics endpoint"
            time.sleep(0.05)


def test_worker_metrics_port_counts_outcomes_and_attempt_times(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    engine = sqlite_engine
    ids = [receive_stripe(engine, f"evt_m{n}", reference=f"pi_m{n}") for n in range(4)]
    dead = gate.receive(  # a payload no handler can read: dead at its first attempt
        engine,
        provider="stripe",
        provider_event_id="evt_m_unreadable",
        event_type="payment_intent.succeeded",
        payload="not json",
        minutes=10,
    ).event.id
    port = free_port()
    temp = tmp_path / "tmp"  # where the worker makes its private metrics directory
    temp.mkdir()
    env = {
        **os.environ,
        "PAYMENTS_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PAYMENTS_DISPATCH": "table",
        "TMPDIR": str(temp),
    }
    exe = Path(sys.executable).with_name("payments-pipeline")
    argv = [str(exe), "worker", "--poll-interval", "0.05", "--metrics-port", str(port)]
    name = "payments_processing_outcomes_total"
    with subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            samples = _scrape(url, proc)
            [directory] = temp.glob("payments-pipeline-metrics-*")
            deadline = time.monotonic() + 60
            while metric_value(samples, name, outcome="processed", engine="table") < 4:
                assert time.monotonic() < deadline, samples
                time.sleep(0.05)
                samples = _scrape(url, proc)
            time.sleep(0.3)  # a few more polls: nothing else may be counted
            samples = _scrape(url, proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "processed 4" in out and "dead 1" in out
    assert not directory.exists()  # removed at exit
    assert fetch_event(engine, dead).status is EventStatus.DEAD
    assert all(fetch_event(engine, i).status is EventStatus.PROCESSED for i in ids)
    outcomes = {
        dict(labels)["outcome"]: value
        for (sample, labels), value in samples.items()
        if sample == name and dict(labels)["engine"] == "table"
    }
    assert outcomes == {"processed": 4, "dead": 1, "failed": 0, "not_claimed": 0, "stale": 0}
    assert metric_value(samples, "payments_processing_seconds_count", engine="table") == 5
    assert metric_value(samples, "payments_processing_seconds_sum", engine="table") > 0
    assert (
        metric_value(samples, "payments_processing_seconds_bucket", engine="table", le="+Inf") == 5
    )
    text = "\n".join(f"{s} {dict(labels)}" for s, labels in samples)
    assert "evt_m" not in text and "pi_m" not in text


def test_worker_metrics_options_refused_in_one_line(sqlite_engine: Engine) -> None:
    env = {
        **os.environ,
        "PAYMENTS_DATABASE_URL": sqlite_engine.url.render_as_string(hide_password=False),
        "PAYMENTS_DISPATCH": "table",
    }
    exe = str(Path(sys.executable).with_name("payments-pipeline"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [exe, "worker", "--metrics-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert busy.returncode == 1
    assert busy.stderr.strip().splitlines()[-1] == (
        f"error: cannot serve metrics on 127.0.0.1:{port}: address already in use"
    )
    lonely = subprocess.run(
        [exe, "worker", "--metrics-host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lonely.returncode == 1
    assert lonely.stderr.strip() == "error: --metrics-host needs --metrics-port"

"""The celery engine against a real RabbitMQ and real worker processes: each event applied once,
a worker killed mid-task, a broker that does not answer, duplicates, the Dagster sweep, and the
task's delivery settings on the app itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import kombu.exceptions
import pytest
import sqlalchemy as sa
from celery import Celery, Task
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.cli import main
from payments_pipeline.config import Settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs.resources import PaymentsDispatcher, sweep_run_config
from payments_pipeline.dispatch import build_dispatcher
from payments_pipeline.dispatch import celery as celery_dispatch
from payments_pipeline.dispatch.celery import CeleryDispatcher, configure, task_time_limits
from payments_pipeline.http.app import create_app
from payments_pipeline.models import (
    DispatchMode,
    EventRef,
    EventStatus,
    PaymentStatus,
    Provider,
    SweepOutcome,
    SweepReason,
    utcnow,
)
from payments_pipeline.sweep import (
    SweepParams,
    begin_sweep,
    claim_candidates,
    dispatch_claimed,
    finish_sweep,
    run_sweep,
)
from soak.tcp_proxy import TcpProxy

from ..conftest import EventFactory
from ..helpers import (
    MetricSamples,
    ago,
    fetch_event,
    make_settings,
    metric_samples,
    metric_value,
    receive_stripe,
)
from ..http.support import STRIPE_SECRET, Client, free_port, stripe_event, stripe_headers
from .conftest import (
    READY_SECONDS,
    Broker,
    LoggedProcess,
    Workers,
    url_of,
    wait_processed,
    worker_env,
)

# A broker nobody listens on; the password must never reach a log line or an error.
DOWN_BROKER = "amqp://guest:not-for-logs@127.0.0.1:1//"


def _ref(engine: Engine, event_id: int) -> EventRef:
    event = fetch_event(engine, event_id)
    return EventRef(event.id, event.provider, event.provider_event_id, event.event_type)


def _ledger_rows(engine: Engine, event_id: int) -> int:
    ledger = store.payment_ledger
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(ledger.c.webhook_event_id == event_id)
        return int(conn.execute(query.select_from(ledger)).scalar_one())


def _payment(engine: Engine, reference: str) -> tuple[PaymentStatus, int | None]:
    with engine.connect() as conn:
        payment = store.get_payment(conn, provider=Provider.STRIPE, reference=reference)
    assert payment is not None
    return payment.status, payment.amount


# --- the app and its task, as configured ------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [celery_dispatch.process_webhook_events, celery_dispatch.process_webhook_event],
    ids=["many", "one"],
)
def test_the_task_settings_on_the_app(task: Task) -> None:
    app = celery_dispatch.app
    assert task.name in (
        "payments_pipeline.process_webhook_events",
        "payments_pipeline.process_webhook_event",
    )
    assert task.name in app.tasks  # registered on the app the workers load
    assert (task.acks_late, task.reject_on_worker_lost) == (True, True)
    assert app.conf.worker_prefetch_multiplier == 4  # a message is a batch of short work
    assert task.ignore_result is True and app.conf.result_backend is None
    # No Celery retries: backoff is the product's (next_attempt_at, then the sweep).
    assert tuple(task.autoretry_for) == () and task.max_retries == 0
    assert task.retry_on_worker_lost is False
    assert app.conf.task_serializer == "json" and list(app.conf.accept_content) == ["json"]
    timeout = celery_dispatch._settings.processing_timeout.total_seconds()
    soft, hard = app.conf.task_soft_time_limit, app.conf.task_time_limit
    assert 0 < soft < hard < timeout
    assert app.conf.task_default_queue == celery_dispatch._settings.celery_queue


def test_time_limits_stay_below_any_processing_timeout() -> None:
    for minutes in (1, 2, 30, 24 * 60):
        soft, hard = task_time_limits(dt.timedelta(minutes=minutes))
        assert 0 < soft < hard < minutes * 60
    with pytest.raises(ValueError, match="processing timeout must be positive"):
        task_time_limits(dt.timedelta(0))
    app = Celery("configured")
    configure(
        app,
        Settings(
            database_url="sqlite://",
            processing_timeout_minutes=1,
            celery_broker_url="amqp://u:p@broker.example:5672/vh",
            celery_queue="pp.eu-1",
        ),
    )
    assert (app.conf.task_soft_time_limit, app.conf.task_time_limit) == (48.6, 54.0)
    assert app.conf.broker_url == "amqp://u:p@broker.example:5672/vh"
    assert app.conf.task_default_queue == "pp.eu-1"


# --- real workers -------------------------------------------------------------------------------


def test_published_events_are_processed_once_each(
    engine: Engine, celery_worker: LoggedProcess, celery_settings: Settings
) -> None:
    dispatcher = build_dispatcher(DispatchMode.CELERY, engine, celery_settings)
    assert isinstance(dispatcher, CeleryDispatcher)
    ids = [
        receive_stripe(engine, f"evt_c{n}", dispatcher, reference=f"pi_c{n}", amount=100 + n)
        for n in range(12)
    ]
    wait_processed(engine, ids, celery_worker)
    for event_id in ids:
        assert fetch_event(engine, event_id).attempts == 1
        assert _ledger_rows(engine, event_id) == 1
    assert [_payment(engine, f"pi_c{n}") for n in (0, 11)] == [
        (PaymentStatus.SUCCEEDED, 100),
        (PaymentStatus.SUCCEEDED, 111),
    ]


def test_a_duplicate_message_is_not_claimed(
    engine: Engine, celery_worker: LoggedProcess, celery_settings: Settings
) -> None:
    since = celery_worker.mark()
    dispatcher = CeleryDispatcher(celery_settings)
    event_id = receive_stripe(engine, "evt_dup", dispatcher, reference="pi_dup", amount=900)
    wait_processed(engine, [event_id], celery_worker)
    dispatcher.dispatch(_ref(engine, event_id))  # the same event, published again
    celery_worker.wait_for(f"webhook event {event_id} not claimed", since=since)
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.PROCESSED and event.attempts == 1
    assert _ledger_rows(engine, event_id) == 1
    assert _payment(engine, "pi_dup") == (PaymentStatus.SUCCEEDED, 900)


def test_the_worker_metrics_port_sums_the_pool_processes(
    engine: Engine, workers: Workers, celery_settings: Settings
) -> None:
    if workers.metrics_url is None:
        pytest.skip("Celery's own command (this backend's worker) has no --metrics-port")
    metrics_url, worker = workers.metrics_url, workers.main

    def scrape() -> MetricSamples:
        return metric_samples(httpx.get(metrics_url, timeout=10).text)

    before = scrape()  # the module's worker counts across its tests: differences only

    def delta(samples: MetricSamples, name: str, **labels: str) -> float:
        return metric_value(samples, name, **labels) - metric_value(before, name, **labels)

    outcomes = "payments_processing_outcomes_total"
    dispatcher = CeleryDispatcher(celery_settings)
    since = worker.mark()
    ids = [
        receive_stripe(engine, f"evt_cm{n}", dispatcher, reference=f"pi_cm{n}") for n in range(6)
    ]
    wait_processed(engine, ids, worker)
    dispatcher.dispatch(_ref(engine, ids[0]))  # the same event again: not claimed
    worker.wait_for(f"webhook event {ids[0]} not claimed", since=since)
    deadline = time.monotonic() + 30
    while True:  # the task counts right after process_event returns
        after = scrape()
        if delta(after, outcomes, outcome="not_claimed", engine="celery") >= 1:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.05)
    counted = {
        outcome: delta(after, outcomes, outcome=outcome, engine="celery")
        for outcome in ("processed", "failed", "dead", "not_claimed", "stale")
    }
    assert counted == {"processed": 6, "failed": 0, "dead": 0, "not_claimed": 1, "stale": 0}
    # One attempt time per processed event; a message that found no claim ran no attempt.
    assert delta(after, "payments_processing_seconds_count", engine="celery") == 6
    assert delta(after, "payments_processing_seconds_sum", engine="celery") > 0
    # Each pool process (--concurrency 2) writes files of its own in the worker's directory.
    [directory] = workers.metrics_temp.glob("payments-pipeline-metrics-*")
    assert len(list(directory.glob("counter_*.db"))) >= 2
    text = httpx.get(metrics_url, timeout=10).text
    assert "evt_cm" not in text and "pi_cm" not in text


def test_a_worker_killed_mid_task_gets_the_message_back_and_the_sweep_applies_it_once(
    engine: Engine, workers: Workers, celery_broker: Broker
) -> None:
    worker, pid_file = workers.slow, workers.pid_file
    settings = make_settings(
        engine, celery_broker_url=celery_broker.url, celery_queue=workers.slow_queue
    )
    dispatcher = CeleryDispatcher(settings)
    since = worker.mark()
    # The former message (one id), still accepted: queued before an upgrade.
    event_id = receive_stripe(engine, "evt_kill", reference="pi_kill", amount=700)
    with celery_dispatch.broker_connection(settings) as connection:
        celery_dispatch.process_webhook_event.apply_async(
            args=[event_id], queue=settings.celery_queue, connection=connection
        )
    deadline = time.monotonic() + 30
    while not pid_file.exists():  # the handler has written the payment and hangs
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.log()
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the pool process, mid-transaction
    # acks_late + reject_on_worker_lost: the message comes back, and finds the attempt taken.
    worker.wait_for(f"webhook event {event_id} not claimed", since=since)
    received = re.findall(r"process_webhook_event\[([0-9a-f-]+)\] received", worker.log(since))
    assert len(received) == 2 and received[0] == received[1]  # the same message, twice
    stalled = fetch_event(engine, event_id)
    assert stalled.status is EventStatus.PROCESSING and stalled.attempts == 1
    with engine.connect() as conn:  # its payment write died with its transaction
        assert store.get_payment(conn, provider=Provider.STRIPE, reference="pi_kill") is None
    with engine.begin() as conn:
        conn.execute(sa.update(store.webhook_events).values(processing_started_at=ago(minutes=2)))
    summary = run_sweep(engine, SweepParams(processing_timeout_minutes=1), dispatcher)
    assert [e.reason for e in summary.events] == [SweepReason.PROCESSING_STALLED]
    wait_processed(engine, [event_id], worker)
    event = fetch_event(engine, event_id)
    assert event.attempts == 2
    assert _ledger_rows(engine, event_id) == 1
    assert _payment(engine, "pi_kill") == (PaymentStatus.SUCCEEDED, 700)


def _publish_ids(settings: Settings, ids: list[int]) -> None:
    """One `process_webhook_events` message carrying `ids`."""
    with celery_dispatch.broker_connection(settings) as connection:
        celery_dispatch.process_webhook_events.apply_async(
            args=[ids], queue=settings.celery_queue, connection=connection
        )


def test_a_message_of_many_ids_is_processed_once_each(
    engine: Engine, celery_worker: LoggedProcess, celery_settings: Settings
) -> None:
    since = celery_worker.mark()
    dispatcher = CeleryDispatcher(celery_settings)
    ids = [
        receive_stripe(engine, f"evt_m{n}", dispatcher, reference=f"pi_m{n}", amount=10 + n)
        for n in range(5)
    ]
    wait_processed(engine, ids, celery_worker)
    fresh = [receive_stripe(engine, f"evt_mm{n}", reference=f"pi_mm{n}") for n in range(20)]
    # The processed ones again, with new ones: one claim takes the new, the rest not claimed.
    _publish_ids(celery_settings, [*ids, *fresh])
    wait_processed(engine, fresh, celery_worker)
    celery_worker.wait_for(f"webhook event {ids[-1]} not claimed", since=since)
    for event_id in [*ids, *fresh]:
        assert fetch_event(engine, event_id).attempts == 1
        assert _ledger_rows(engine, event_id) == 1
    assert _payment(engine, "pi_mm19")[0] is PaymentStatus.SUCCEEDED


def test_a_worker_killed_mid_batch_gets_the_message_back_and_nothing_is_applied_twice(
    engine: Engine, workers: Workers, celery_broker: Broker
) -> None:
    """The slow handler writes the first event's payment, then hangs: the pool process dies with
    the batch's claim committed and its effects not. The redelivered message finds every id
    `processing` (not claimed); the sweep reclaims them and each is applied once."""
    worker, pid_file = workers.slow, workers.pid_file
    settings = make_settings(
        engine, celery_broker_url=celery_broker.url, celery_queue=workers.slow_queue
    )
    since = worker.mark()
    ids = [receive_stripe(engine, f"evt_kb{n}", reference=f"pi_kb{n}") for n in range(4)]
    _publish_ids(settings, ids)
    deadline = time.monotonic() + 30
    while not pid_file.exists():  # the first handler has written its payment and hangs
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.log()
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the pool process, mid-transaction
    for event_id in ids:
        worker.wait_for(f"webhook event {event_id} not claimed", since=since)
    received = re.findall(r"process_webhook_events\[([0-9a-f-]+)\] received", worker.log(since))
    assert len(received) == 2 and received[0] == received[1]  # the same message, twice
    for event_id in ids:
        stalled = fetch_event(engine, event_id)
        assert stalled.status is EventStatus.PROCESSING and stalled.attempts == 1
    with engine.connect() as conn:  # the batch's writes died with its transaction
        assert store.get_payment(conn, provider=Provider.STRIPE, reference="pi_kb0") is None
    with engine.begin() as conn:
        conn.execute(sa.update(store.webhook_events).values(processing_started_at=ago(minutes=2)))
    pid_file.unlink()
    summary = run_sweep(
        engine, SweepParams(processing_timeout_minutes=1), CeleryDispatcher(settings)
    )
    assert [e.reason for e in summary.events] == [SweepReason.PROCESSING_STALLED] * 4
    wait_processed(engine, ids, worker)
    for n, event_id in enumerate(ids):
        assert fetch_event(engine, event_id).attempts == 2
        assert _ledger_rows(engine, event_id) == 1
        assert _payment(engine, f"pi_kb{n}")[0] is PaymentStatus.SUCCEEDED
    assert not pid_file.exists()  # second attempts: the built-in handler, no hang


def test_the_sweep_publishes_chunks_of_ids_and_each_is_applied_once(
    engine: Engine,
    event_factory: EventFactory,
    celery_worker: LoggedProcess,
    celery_settings: Settings,
) -> None:
    since = celery_worker.mark()
    ids = [event_factory(Provider.STRIPE, dispatched_at=ago(minutes=30)) for _ in range(8)]
    dispatcher = CeleryDispatcher(celery_settings, chunk=3)
    summary = run_sweep(engine, SweepParams(minutes=10), dispatcher)
    assert [e.outcome for e in summary.events] == [SweepOutcome.DISPATCHED] * 8
    wait_processed(engine, ids, celery_worker)
    messages = re.findall(
        r"process_webhook_events\[[0-9a-f-]+\] received", celery_worker.log(since)
    )
    assert len(messages) == 3  # 8 ids, 3 a message
    assert [fetch_event(engine, i).attempts for i in ids] == [1] * 8
    assert [_ledger_rows(engine, i) for i in ids] == [1] * 8


def test_the_receivers_claims_of_a_few_moments_are_one_message_applied_once_each(
    engine: Engine, celery_worker: LoggedProcess, celery_settings: Settings
) -> None:
    settings = dataclasses.replace(
        celery_settings,
        stripe_webhook_secrets=(STRIPE_SECRET,),
        receiver_dispatch=DispatchMode.CELERY,
        dispatch_threads=1,
        dispatch_coalesce_ms=2000,  # wide: the posts below all land within it
    )
    since = celery_worker.mark()
    with Client(create_app(settings, engine=engine)) as client:
        responses = []
        for n in range(4):
            body = stripe_event(f"evt_co{n}", reference=f"pi_co{n}")
            responses.append(
                client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
            )
        client.wait_dispatched()
    assert [r.json()["outcome"] for r in responses] == ["dispatched"] * 4
    ids = [r.json()["event_id"] for r in responses]
    wait_processed(engine, ids, celery_worker)
    messages = re.findall(
        r"process_webhook_events\[[0-9a-f-]+\] received", celery_worker.log(since)
    )
    assert len(messages) == 1
    assert [fetch_event(engine, i).attempts for i in ids] == [1] * 4
    assert [_ledger_rows(engine, i) for i in ids] == [1] * 4


def test_the_dagster_sweep_publishes_to_the_workers(
    engine: Engine,
    event_factory: EventFactory,
    celery_worker: LoggedProcess,
    celery_broker: Broker,
    celery_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in worker_env(engine, celery_broker, celery_queue).items():
        if name.startswith("PAYMENTS_"):
            monkeypatch.setenv(name, value)
    lost = event_factory(Provider.STRIPE, dispatched_at=ago(minutes=30))
    never = event_factory(Provider.MONETBIL)
    job = defs.resolve_job_def("requeue_stuck_webhooks")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config=sweep_run_config(minutes=10, provider="all"),
            instance=instance,
            resources={"dispatcher": PaymentsDispatcher(mode="celery")},
        )
    assert result.success
    (step,) = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "dispatched_webhook_events"
    ]
    assert step["engine"].value == "celery" and step["handed_on"].value == "2"  # unplotted: text
    wait_processed(engine, [lost, never], celery_worker)
    assert [fetch_event(engine, i).attempts for i in (lost, never)] == [1, 1]
    assert [_ledger_rows(engine, i) for i in (lost, never)] == [1, 1]


# --- a broker that does not answer ------------------------------------------------------------


def test_publishing_to_a_down_broker_fails_fast(sqlite_engine: Engine) -> None:
    dispatcher = CeleryDispatcher(make_settings(sqlite_engine, celery_broker_url=DOWN_BROKER))
    ref = EventRef(1, Provider.STRIPE, "evt_down", "payment_intent.succeeded")
    started = time.monotonic()
    with pytest.raises(kombu.exceptions.OperationalError) as raised:
        dispatcher.dispatch(ref)
    assert time.monotonic() - started < 5
    assert "not-for-logs" not in str(raised.value)


def test_publishing_many_to_a_down_broker_returns_them_all_unsent(sqlite_engine: Engine) -> None:
    dispatcher = CeleryDispatcher(
        make_settings(sqlite_engine, celery_broker_url=DOWN_BROKER), chunk=2
    )
    refs = [EventRef(n, Provider.STRIPE, f"evt_d{n}", "payment_intent.succeeded") for n in range(5)]
    started = time.monotonic()
    unsent = dispatcher.dispatch_many(refs)
    assert time.monotonic() - started < 10  # the first chunk's failure ends the publishing
    assert [u.event for u in unsent] == refs
    assert all(isinstance(u.error, kombu.exceptions.OperationalError) for u in unsent)
    assert "not-for-logs" not in str(unsent[0].error)
    assert dispatcher.dispatch_many([]) == []


def test_the_receiver_answers_200_when_the_publish_fails_and_the_sweep_recovers_the_event(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        sqlite_engine,
        stripe_webhook_secrets=(STRIPE_SECRET,),
        receiver_dispatch=DispatchMode.CELERY,
        celery_broker_url=DOWN_BROKER,
        dispatch_threads=1,
    )
    body = stripe_event("evt_unpublished", reference="pi_unpublished")
    app = create_app(settings, engine=sqlite_engine)
    with caplog.at_level(logging.INFO), Client(app) as client:
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        client.wait_dispatched()
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    event_id = response.json()["event_id"]
    failures = [r for r in caplog.records if "dispatch failed" in r.getMessage()]
    assert len(failures) == 1
    (line,) = failures
    message = line.getMessage()
    assert f"id={event_id} " in message and "provider_event_id=evt_unpublished" in message
    assert "dispatch_lost" in message
    assert "\n" not in message and line.exc_info is None and "not-for-logs" not in caplog.text
    event = fetch_event(sqlite_engine, event_id)
    assert event.status is EventStatus.RECEIVED and event.dispatched_at is not None

    # Minutes later the sweep finds it; with the broker still down its publish is dispatch_failed.
    params = SweepParams(minutes=settings.stuck_requeue_minutes)
    later = utcnow() + dt.timedelta(minutes=params.minutes, seconds=1)
    scan = begin_sweep(sqlite_engine, params, now=later)
    claim = claim_candidates(sqlite_engine, scan)
    dispatch = dispatch_claimed(sqlite_engine, scan, claim, CeleryDispatcher(settings))
    summary = finish_sweep(sqlite_engine, scan, claim, dispatch)
    assert [(e.event.id, e.reason, e.outcome) for e in summary.events] == [
        (event_id, SweepReason.DISPATCH_LOST, SweepOutcome.DISPATCH_FAILED)
    ]
    with sqlite_engine.connect() as conn:
        audited = conn.execute(sa.select(store.sweep_events.c.outcome)).scalars().all()
    assert audited == [SweepOutcome.DISPATCH_FAILED.value]


def test_worker_with_a_bad_broker_url_exits_with_one_error_line(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", url_of(sqlite_engine))
    monkeypatch.setenv("PAYMENTS_DISPATCH", "celery")
    for url, expected in [
        (DOWN_BROKER, "error: broker unreachable at amqp://guest:**@127.0.0.1:1//: "),
        ("nosuch://broker", "error: PAYMENTS_CELERY_BROKER_URL is not a usable broker URL: "),
    ]:
        monkeypatch.setenv("PAYMENTS_CELERY_BROKER_URL", url)
        started = time.monotonic()
        code = main(["--log-level", "warning", "worker"])
        err = capsys.readouterr().err
        assert code == 1 and time.monotonic() - started < 10
        (line,) = err.strip().splitlines()
        assert line.startswith(expected) and "not-for-logs" not in line


def test_worker_refuses_the_other_engines_options(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", url_of(sqlite_engine))
    for mode, option, value in [("celery", "--batch", "5"), ("table", "--queue", "q")]:
        monkeypatch.setenv("PAYMENTS_DISPATCH", mode)
        assert main(["worker", option, value]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == f"error: {option} is not an option of the {mode} worker"
    assert main(["worker", "--queue", "a b"]) == 2
    assert "--queue" in capsys.readouterr().err


def test_serve_starts_with_the_broker_down(sqlite_engine: Engine, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_"))}
    env.update(
        PAYMENTS_DATABASE_URL=url_of(sqlite_engine),
        PAYMENTS_DISPATCH="celery",
        PAYMENTS_CELERY_BROKER_URL=DOWN_BROKER,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
    )
    exe = str(Path(sys.executable).with_name("payments-pipeline"))
    server = LoggedProcess([exe, "serve", "--port", str(port)], env, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while not _healthy(http):
                assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
                time.sleep(0.1)
            body = stripe_event("evt_served_down", reference="pi_served_down")
            response = http.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200
        server.wait_for("dispatch failed id=1 ")
    finally:
        server.stop()
    logs = server.log()
    assert "Traceback" not in logs and "not-for-logs" not in logs
    assert fetch_event(sqlite_engine, 1).status is EventStatus.RECEIVED


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


# --- a broker cut, or down for seconds ------------------------------------------------------


def test_the_receiver_and_a_worker_reconnect_by_themselves_after_a_cut_and_an_outage(
    engine: Engine,
    backend: str,
    celery_broker: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through a TCP proxy in front of RabbitMQ: every connection cut at once, then the broker
    unreachable for seconds. Deliveries after each fault are processed without a sweep; the one
    made during the outage is answered 200 and left to the sweep."""
    if backend != "postgres":
        pytest.skip("the broker's faults do not depend on the database: run on PostgreSQL")
    proxy = TcpProxy.for_url(celery_broker.url)
    url = proxy.url_for(celery_broker.url)
    queue = celery_broker.new_queue("proxied")
    env = worker_env(engine, celery_broker, queue) | {"PAYMENTS_CELERY_BROKER_URL": url}
    exe = str(Path(sys.executable).with_name("payments-pipeline"))
    worker = LoggedProcess([exe, "worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    settings = make_settings(
        engine,
        stripe_webhook_secrets=(STRIPE_SECRET,),
        receiver_dispatch=DispatchMode.CELERY,
        celery_broker_url=url,
        celery_queue=queue,
        dispatch_threads=1,
    )
    try:
        worker.wait_for(" ready.", timeout=READY_SECONDS)
        with caplog.at_level(logging.INFO), Client(create_app(settings, engine=engine)) as client:

            def deliver(n: int) -> int:
                body = stripe_event(f"evt_px{n}", reference=f"pi_px{n}")
                response = client.post(
                    "/webhooks/stripe", content=body, headers=stripe_headers(body)
                )
                assert response.status_code == 200
                client.wait_dispatched()
                return int(response.json()["event_id"])

            before = deliver(0)
            wait_processed(engine, [before], worker)
            assert proxy.cut() >= 2  # the receiver's publishing connection and the worker's
            after_cut = deliver(1)
            wait_processed(engine, [after_cut], worker, timeout=90)
            proxy.down()
            during = deliver(2)
            assert f"dispatch failed id={during} " in caplog.text
            time.sleep(8)  # the broker unreachable for seconds
            accepted = proxy.connections
            proxy.up()
            after_outage = deliver(3)
            wait_processed(engine, [after_outage], worker, timeout=90)
        assert proxy.connections > accepted  # both came back over new connections
        assert fetch_event(engine, during).status is EventStatus.RECEIVED  # the sweep's now
        for event_id in (before, after_cut, after_outage):
            assert fetch_event(engine, event_id).attempts == 1
            assert _ledger_rows(engine, event_id) == 1
    finally:
        worker.stop(graceful=False)
        proxy.close()

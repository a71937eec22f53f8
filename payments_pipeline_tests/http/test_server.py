"""Against a real uvicorn server on 127.0.0.1: parallel duplicates, the body limit over a socket,
and `payments-pipeline serve` itself (its log lines, its refusals to start)."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from payments_pipeline.cli import main
from payments_pipeline.config import Settings
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.http.app import create_app
from payments_pipeline.models import EventStatus

from ..helpers import fetch_event
from .support import (
    MONETBIL_SECRET,
    STRIPE_SECRET,
    CountingDispatcher,
    count_events,
    count_ledger,
    form,
    free_port,
    monetbil_fields,
    running_server,
    serve_env,
    stripe_event,
    stripe_headers,
    wait_healthy,
)

pytestmark = pytest.mark.slow
PARALLEL = 20


def test_twenty_identical_deliveries_in_parallel_make_one_row_and_one_dispatch(
    engine: Engine, receiver_settings: Settings
) -> None:
    dispatcher = CountingDispatcher(InlineDispatcher(engine, receiver_settings))
    app = create_app(receiver_settings, engine=engine, dispatcher=dispatcher)
    rounds = 3  # a race won by luck once is rarely won three times
    with running_server(app) as url:
        for round_ in range(rounds):
            body = stripe_event(f"evt_parallel_{round_}", reference=f"pi_parallel_{round_}")
            barrier = threading.Barrier(PARALLEL)
            answers: list[httpx.Response] = []
            lock = threading.Lock()

            def deliver(
                body: str = body,
                barrier: threading.Barrier = barrier,
                answers: list[httpx.Response] = answers,
                lock: threading.Lock = lock,
            ) -> None:
                # One client each: its own connection, as Stripe's retries would arrive.
                with httpx.Client(base_url=url, timeout=30) as http:
                    headers = stripe_headers(body)
                    barrier.wait()
                    response = http.post("/webhooks/stripe", content=body, headers=headers)
                with lock:
                    answers.append(response)

            threads = [threading.Thread(target=deliver) for _ in range(PARALLEL)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert [r.status_code for r in answers] == [200] * PARALLEL
            outcomes = Counter(r.json()["outcome"] for r in answers)
            assert outcomes["dispatched"] == 1, outcomes
            assert set(outcomes) <= {"dispatched", "received", "already_processed"}
            assert len({r.json()["event_id"] for r in answers}) == 1
        assert app.state.receiver.queue.wait_idle(30)
    assert count_events(engine) == rounds
    assert len(dispatcher.events) == rounds and len({e.id for e in dispatcher.events}) == rounds
    assert count_ledger(engine) == rounds  # each payment effect applied exactly once
    for event in dispatcher.events:
        processed = fetch_event(engine, event.id)
        assert processed.status is EventStatus.PROCESSED and processed.attempts == 1


def test_body_limit_over_a_real_socket(engine: Engine, receiver_settings: Settings) -> None:
    settings = dataclasses.replace(receiver_settings, max_body_bytes=64 * 1024)
    app = create_app(settings, engine=engine)
    big = b"{" + b" " * (1024 * 1024) + b"}"
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        declared = http.post("/webhooks/stripe", content=big, headers=stripe_headers(big.decode()))
        assert declared.status_code == 413

        def chunks() -> object:
            for _ in range(16):
                yield b" " * 65536

        streamed = http.post("/webhooks/stripe", content=chunks(), headers=stripe_headers("{}"))
        assert streamed.status_code == 413
        assert streamed.json()["error"] == "payload_too_large"
        assert http.get("/healthz").status_code == 200  # the server is fine afterwards
    assert count_events(engine) == 0


def test_serve_runs_the_receiver_and_keeps_secrets_out_of_its_logs(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "payments_pipeline.cli", "serve", "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=serve_env(sqlite_engine), stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            wait_healthy(url, process)
            fields = monetbil_fields("tx_served", first_name="Private-Name")
            body = stripe_event("evt_served", reference="pi_served_ref")
            signed = stripe_headers(body)
            with httpx.Client(base_url=url, timeout=10) as http:
                query = http.get(f"/webhooks/monetbil?{form(fields)}")
                stripe_ok = http.post("/webhooks/stripe", content=body, headers=signed)
                bad_query = http.get(f"/webhooks/monetbil?{form({**fields, 'sign': 'c' * 32})}")
            assert (query.status_code, stripe_ok.status_code, bad_query.status_code) == (
                200,
                200,
                400,
            )
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
    logs = log_path.read_text()
    assert 'GET /webhooks/monetbil?[redacted] HTTP/1.1" 200' in logs
    assert 'GET /webhooks/monetbil?[redacted] HTTP/1.1" 400' in logs
    assert 'POST /webhooks/stripe HTTP/1.1" 200' in logs
    assert "webhook event processed" in logs  # processing ran in the server, after the answers
    for secret in (
        STRIPE_SECRET,
        MONETBIL_SECRET,
        fields["sign"],
        "c" * 32,
        signed["stripe-signature"].split("v1=")[1],
        "Private-Name",
        "pi_served_ref",
    ):
        assert secret not in logs
    assert fetch_event(sqlite_engine, 1).provider_event_id == "tx_served:1"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--log-level", "warning", *argv])
    return code, capsys.readouterr().err


def test_serve_refuses_to_start_without_any_provider_secret(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in serve_env(sqlite_engine).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    monkeypatch.delenv("MONETBIL_SERVICE_SECRET")
    code, err = _run(capsys, "serve", "--port", str(free_port()))
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: no provider is configured: set STRIPE_WEBHOOK_SECRET and/or MONETBIL_SERVICE_SECRET"
    )


def test_serve_refuses_a_port_in_use(
    sqlite_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in serve_env(sqlite_engine).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MONETBIL_SERVICE_SECRET")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _run(capsys, "serve", "--port", str(port))
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1] == f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    # The provider left unconfigured is named before anything else happens.
    assert "MONETBIL_SERVICE_SECRET is not set" in caplog.text


def test_serve_refuses_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", f"postgresql://u@127.0.0.1:{free_port()}/x")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    code, err = _run(capsys, "serve", "--port", str(free_port()))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: database unreachable at ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--port", "0"), "--port"),
        (("--workers", "0"), "--workers"),
        (("--dispatch", "later"), "--dispatch"),
        (("--dispatch", "queue"), "--dispatch"),  # no alias of `table`
    ],
)
def test_serve_rejects_bad_options(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, err = _run(capsys, "serve", *argv)
    assert code == 2 and err.startswith("error: ") and message in err

"""`GET /metrics` on a real `payments-pipeline serve --workers 2`: exact counts summed over both
worker processes, fixed label sets only, nothing from a request in the scrape, and the private
multiprocess directory removed at exit; plus the app's counters in process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from sqlalchemy import Engine

from payments_pipeline import metrics
from payments_pipeline.models import EventStatus

from ..helpers import MetricSamples, fetch_event, metric_samples, metric_value
from .conftest import ClientFactory
from .support import (
    MONETBIL_SECRET,
    STRIPE_SECRET,
    CrashingDispatcher,
    form,
    free_port,
    monetbil_fields,
    serve_env,
    stripe_event,
    stripe_headers,
    wait_healthy,
)

DELIVERIES = "payments_webhook_deliveries_total"


def _delivered(samples: MetricSamples) -> dict[tuple[str, str, str], float]:
    """`payments_webhook_deliveries_total` as {(provider, outcome, status_code): value}, zeros
    left out."""
    found = {}
    for (name, labels), value in samples.items():
        if name == DELIVERIES and value:
            got = dict(labels)
            found[got["provider"], got["outcome"], got["status_code"]] = value
    return found


def _wait_for(
    predicate: Callable[[], bool], what: str, process: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "serve exited early"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_serve_metrics_count_every_answer_over_two_worker_processes(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    temp = tmp_path / "tmp"  # serve's private metrics directory is made here
    temp.mkdir()
    command = [sys.executable, "-m", "payments_pipeline.cli", "serve", "--port", str(port)]
    command += ["--workers", "2"]
    env = serve_env(sqlite_engine, TMPDIR=str(temp), PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    log_path = tmp_path / "serve.log"
    fields = monetbil_fields("tx_metrics_77", first_name="Private-Name")
    bodies = [stripe_event(f"evt_metrics_{n}", reference=f"pi_metrics_ref_{n}") for n in range(3)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, process)
            # The inherited PROMETHEUS_MULTIPROC_DIR is not used: serve makes its own.
            [directory] = temp.glob("payments-pipeline-metrics-*")
            # Both worker processes are up once each has written its counters' file.
            _wait_for(
                lambda: len(list(directory.glob("counter_*.db"))) == 2,
                "a counter file per worker process",
                process,
            )
            # A new connection per request, so both processes take some of them.
            answers = [
                httpx.post(f"{url}/webhooks/stripe", content=b, headers=stripe_headers(b))
                for b in bodies
            ]
            answers.append(httpx.get(f"{url}/webhooks/monetbil?{form(fields)}"))
            bad = stripe_headers(bodies[0], secret="whsec_not_ours")
            answers.append(httpx.post(f"{url}/webhooks/stripe", content=bodies[0], headers=bad))
            answers.append(httpx.get(f"{url}/webhooks/stripe"))
            answers.append(httpx.post(f"{url}/webhooks/paypal-evt_metrics_0", content=b"{}"))
            answers.append(httpx.get(f"{url}/healthz"))
            assert [a.status_code for a in answers] == [200, 200, 200, 200, 400, 405, 404, 200]
            # Processed in the servers (inline), then delivered again: already_processed.
            _wait_for(
                lambda: fetch_event(sqlite_engine, 1).status is EventStatus.PROCESSED,
                "the first event processed",
                process,
            )
            again = httpx.post(
                f"{url}/webhooks/stripe", content=bodies[0], headers=stripe_headers(bodies[0])
            )
            assert again.json()["outcome"] == "already_processed"

            def processed() -> float:
                samples = metric_samples(httpx.get(f"{url}/metrics").text)
                name = "payments_processing_outcomes_total"
                return metric_value(samples, name, outcome="processed", engine="inline")

            _wait_for(lambda: processed() == 4, "4 events processed", process)
            scrapes = [httpx.get(f"{url}/metrics") for _ in range(6)]  # either process answers
            files = sorted(directory.glob("counter_*.db"))
            per_process = [list(MmapedDict.read_all_values_from_file(str(f))) for f in files]
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
    assert not directory.exists()  # removed when serve exits
    assert {s.headers["content-type"] for s in scrapes} == {metrics.CONTENT_TYPE}
    texts = {s.text for s in scrapes}
    assert len(texts) == 1, "every scrape sums both processes alike"
    text = texts.pop()
    samples = metric_samples(text)
    assert _delivered(samples) == {
        ("stripe", "dispatched", "200"): 3,
        ("stripe", "already_processed", "200"): 1,
        ("stripe", "invalid_signature", "400"): 1,
        ("stripe", "method_not_allowed", "405"): 1,
        ("monetbil", "dispatched", "200"): 1,
        ("unknown", "unknown_provider", "404"): 1,
    }
    # The sum is over the processes' own files (however the requests were spread).
    wanted = {"provider": "stripe", "outcome": "dispatched", "status_code": "200"}
    stripe_dispatched = [
        value
        for values in per_process
        for key, value, _, _ in values
        if json.loads(key)[1] == DELIVERIES and json.loads(key)[2] == wanted
    ]
    assert len(stripe_dispatched) == 2 and sum(stripe_dispatched) == 3
    assert not list(tmp_path.glob("*.db"))  # nothing went to the inherited directory
    # Every verified delivery went through the gate once: 4 Stripe, 1 Monetbil.
    assert metric_value(samples, "payments_gate_seconds_count", provider="stripe") == 4
    assert metric_value(samples, "payments_gate_seconds_count", provider="monetbil") == 1
    assert metric_value(samples, "payments_gate_seconds_sum", provider="stripe") > 0
    assert metric_value(samples, "payments_processing_seconds_count", engine="inline") == 4
    for provider in ("stripe", "monetbil"):
        name = "payments_dispatch_failures_total"
        assert (name, frozenset({"provider": provider, "engine": "inline"}.items())) in samples
        assert metric_value(samples, name, provider=provider, engine="inline") == 0
    # Fixed label sets only: no event id, payload value, signature, path or secret.
    for leaked in (
        "evt_metrics",
        "pi_metrics_ref",
        "tx_metrics_77",
        "Private-Name",
        "paypal",
        fields["sign"],
        STRIPE_SECRET,
        MONETBIL_SECRET,
        "whsec_not_ours",
    ):
        assert leaked not in text
    labels = {label for _, labelset in samples for label, _ in labelset}
    assert labels <= {"provider", "outcome", "status_code", "engine", "le"}


def test_the_apps_counters_in_process(make_client: ClientFactory) -> None:
    """Without a multiprocess directory the counters are this process's; read as differences,
    since every app of the process shares them."""
    client = make_client(CrashingDispatcher())
    before = metric_samples(client.get("/metrics").text)
    body = stripe_event("evt_in_process", reference="pi_in_process")
    assert (
        client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).status_code
        == 200
    )
    client.wait_dispatched()
    assert (
        client.post(
            "/webhooks/stripe", content="{}", headers={"content-type": "text/plain"}
        ).status_code
        == 415
    )
    assert client.get("/webhooks/unknown-name").status_code == 404
    after = metric_samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta(DELIVERIES, provider="stripe", outcome="dispatched", status_code="200") == 1
    assert (
        delta(DELIVERIES, provider="stripe", outcome="unsupported_media_type", status_code="415")
        == 1
    )
    assert delta(DELIVERIES, provider="unknown", outcome="unknown_provider", status_code="404") == 1
    assert delta("payments_gate_seconds_count", provider="stripe") == 1
    # The dispatcher raised after the answer: one failed hand-off, under the caller's engine.
    name = "payments_dispatch_failures_total"
    assert delta(name, provider="stripe", engine="custom") == 1
    # Scrapes are not deliveries.
    assert sum(_delivered(after).values()) - sum(_delivered(before).values()) == 3


@pytest.mark.slow
def test_serve_stopped_by_sigterm_removes_its_metrics_directory(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """With one worker uvicorn raises SIGTERM again once it has shut down; the directory must be
    gone all the same, and serve still ends as SIGTERM ends it."""
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    command = [sys.executable, "-m", "payments_pipeline.cli", "serve", "--port", str(port)]
    env = serve_env(sqlite_engine, TMPDIR=str(temp))
    # serve starts as a service manager starts it, SIGTERM at its default: an ignored SIGTERM is
    # inherited across exec (a library in this test process may have left it ignored), and serve,
    # like uvicorn alone, then ends normally (0) after its graceful shutdown.
    inherited = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with (tmp_path / "serve.log").open("wb") as log_file:
        try:
            process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        finally:
            signal.signal(signal.SIGTERM, inherited)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
            [directory] = temp.glob("payments-pipeline-metrics-*")
            assert list(directory.glob("counter_*.db"))
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == -signal.SIGTERM
    assert not directory.exists()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()

"""What the receiver tests share: a synchronous client for the ASGI app, signed deliveries, row
counts, a real uvicorn server in a thread, `payments-pipeline serve` in its own process, and
dispatchers that count, block or fail."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio.from_thread
import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette

from payments_pipeline import store
from payments_pipeline.models import EventRef
from payments_pipeline.providers import monetbil, samples, stripe

STRIPE_SECRET = "whsec_test_current_0123456789"
STRIPE_OLD_SECRET = "whsec_test_previous_9876543210"
MONETBIL_SECRET = "monetbil-service-secret-4242"
JSON_HEADERS = {"content-type": "application/json"}
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


class Client:
    """A synchronous client for the app over `httpx.ASGITransport`, lifespan included.

    Starlette's own TestClient warns (and warnings are errors in this suite), so this runs the
    app's lifespan and an `httpx.AsyncClient` on an anyio blocking portal instead.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def __enter__(self) -> Client:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._portal.call(self._start)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._portal.call(self._stop)
        finally:
            self._portal_cm.__exit__(None, None, None)

    async def _start(self) -> None:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
        )

    async def _stop(self) -> None:
        await self._http.aclose()
        await self._lifespan.__aexit__(None, None, None)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._http.request, method, url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def wait_dispatched(self, timeout: float = 15.0) -> None:
        """Block until every claimed event has been handed to the dispatcher (and it returned)."""
        queue = self.app.state.receiver.queue
        assert queue is None or queue.wait_idle(timeout), "dispatch queue did not drain"


def stripe_event(event_id: str, *, reference: str = "pi_1", amount: int = 1500) -> str:
    """A Stripe event body, as Stripe sends it (compact JSON, a recent `created`)."""
    return samples.stripe_event(event_id, reference=reference, amount=amount)


# A Stripe-Signature placeholder for cases built when the tests are collected: the test signs the
# body when it sends it (`signed_when_sent`). A signature made at collection would be older than
# the 300 s tolerance by the time a long suite reaches the test.
SIGN_WHEN_SENT = "sign-when-sent"


def signed_when_sent(headers: dict[str, str], content: bytes) -> dict[str, str]:
    """`headers` with a placeholder signature replaced by a fresh one of `content`."""
    if headers.get("stripe-signature") != SIGN_WHEN_SENT:
        return headers
    return {**headers, **stripe_headers(content.decode())}


def stripe_headers(
    body: str, *, secret: str = STRIPE_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    return {**JSON_HEADERS, "stripe-signature": stripe.sign_payload(body, secret, timestamp)}


def monetbil_fields(
    transaction_id: str, status: str = "1", *, secret: str = MONETBIL_SECRET, **extra: str
) -> dict[str, str]:
    """A signed Monetbil notification's fields (the shape its notify.php reads)."""
    fields = {
        "service": "svc_key",
        "transaction_id": transaction_id,
        "transaction_uuid": f"uuid-{transaction_id}",
        "msisdn": "237670000000",
        "amount": "500",
        "fee": "10",
        "status": status,
        "message": "Paiement réussi !",
        "currency": "XAF",
        "payment_ref": f"order-{transaction_id}",
        "item_ref": "item-1",
        "user": "42",
        **extra,
    }
    return monetbil.sign_fields(fields, secret)


def form(fields: dict[str, str]) -> str:
    return urlencode(fields)


@dataclass(frozen=True)
class Refused:
    """A request the receiver must refuse, and the refusal expected."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes
    status: int
    error: str

    def send(self, client: Client, headers: dict[str, str] | None = None) -> httpx.Response:
        """The request (with `headers` instead of its own, if given); its answer checked."""
        response = client.request(
            self.method,
            self.url,
            content=self.content,
            headers=self.headers if headers is None else headers,
        )
        assert (response.status_code, response.json()["error"]) == (self.status, self.error), (
            response.text
        )
        assert response.json()["detail"]
        return response


def refusals(cases: Iterable[tuple[Any, ...]]) -> list[Any]:
    """`(name, method, url, headers, content, status, error)` cases as `Refused` parameters, each
    named by its name."""
    return [pytest.param(Refused(*case[1:]), id=case[0]) for case in cases]


def count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(store.webhook_events)).scalar_one()
        )


def count_ledger(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(store.payment_ledger)).scalar_one()
        )


class CountingDispatcher:
    """Counts hand-offs, then passes them on (to a real dispatcher, if given)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.events: list[EventRef] = []
        self._lock = threading.Lock()

    def dispatch(self, event: EventRef) -> None:
        with self._lock:
            self.events.append(event)
        if self.inner is not None:
            self.inner.dispatch(event)


class BlockingDispatcher:
    """Holds every hand-off until `release` is set: shows what happens while processing runs."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.done: list[EventRef] = []

    def dispatch(self, event: EventRef) -> None:
        self.started.set()
        assert self.release.wait(30), "never released"
        self.done.append(event)


class CrashingDispatcher:
    """The process's processing dies right after the response went out."""

    def __init__(self) -> None:
        self.calls = 0

    def dispatch(self, event: EventRef) -> None:
        self.calls += 1
        raise RuntimeError("worker died before processing started")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(app: Starlette, **options: Any) -> Iterator[str]:
    """A real uvicorn server for `app` on a free 127.0.0.1 port, in a thread; yields its URL.
    `options` go to `uvicorn.Config` (e.g. `serve`'s own `http_options`)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop"


def serve_env(engine: Engine, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_"))}
    env.pop("MONETBIL_SERVICE_SECRET", None)
    env.update(
        PAYMENTS_DATABASE_URL=engine.url.render_as_string(hide_password=False),
        STRIPE_WEBHOOK_SECRET=f"whsec_rotated_out,{STRIPE_SECRET}",
        MONETBIL_SERVICE_SECRET=MONETBIL_SECRET,
        **extra,
    )
    return env


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited early"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


@contextmanager
def serve(
    engine: Engine, tmp_path: Path, *args: str, port: int | None = None, **env: str
) -> Iterator[tuple[int, int]]:
    """`payments-pipeline serve` in its own process, on `port` (default: a free one); yields
    (port, pid). Stopped by its pid. Its output goes to tmp_path/serve.log."""
    port = port or free_port()
    command = [sys.executable, "-m", "payments_pipeline.cli", "--log-level", "warning", "serve"]
    command += ["--port", str(port), "--no-access-log", *args]
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            command, env=serve_env(engine, **env), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
            yield port, process.pid
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

"""What the drift tests share: our payment rows made the way production makes them, by signed
Stripe webhooks POSTed to a running receiver (uvicorn in a thread, inline processing), with the
event JSON our fake Stripe API gives for its own objects (`FakeStripePaymentsAPI.event_for`); a
drift run against the fake; the SELECTs that read `payments` for a page."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import Engine
from starlette.applications import Starlette

from payments_pipeline.drift import DriftReport, day_bounds, stripe_drift
from payments_pipeline.http.app import create_app
from payments_pipeline.providers.stripe_api import StripeApi, StripePayments

from ..fakes.stripe_payments_api import FakeStripePaymentsAPI
from ..helpers import make_settings
from ..http.support import STRIPE_SECRET, running_server, stripe_headers

DAY = dt.date(2026, 12, 5)
T0, T_END = day_bounds(DAY)  # 2026-12-05T00:00:00Z and 23:59:59Z, unix seconds


@dataclass
class Receiver:
    """The receiver at `url`; `deliver` POSTs an event signed and waits until it was processed."""

    app: Starlette
    http: httpx.Client

    def deliver(self, event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":"))
        response = self.http.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "dispatched", response.text
        assert self.app.state.receiver.queue.wait_idle(30), "the event was not processed"

    def deliver_of(self, api: FakeStripePaymentsAPI, obj: Any, event_type: str, **kw: Any) -> None:
        """The event Stripe would send now about `obj` (an object or an id), delivered."""
        self.deliver(api.event_for(obj, event_type, **kw))


@contextmanager
def receiving(engine: Engine) -> Iterator[Receiver]:
    """The receiver app on `engine`, served by uvicorn on a free port (inline processing)."""
    settings = make_settings(engine, stripe_webhook_secrets=(STRIPE_SECRET,), dispatch_threads=2)
    app = create_app(settings, engine=engine)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Receiver(app, http)


def drift(
    engine: Engine,
    api: FakeStripePaymentsAPI,
    day: dt.date = DAY,
    *,
    key: str | None = None,
    **options: Any,
) -> DriftReport:
    """`stripe_drift` for `day` through the product's client on the fake."""
    with StripeApi(key or api.api_key, api.url, **options) as client:
        return stripe_drift(engine, StripePayments(client), day)


@contextmanager
def payments_selects(engine: Engine) -> Iterator[list[str]]:
    """The SELECTs that read a page's `payments` rows by reference, while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = " ".join(statement.split())
        if text.startswith("SELECT") and "FROM payments" in text and "reference IN" in text:
            seen.append(text)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

"""Helpers shared by the tests: payload builders, settings, a recording dispatcher."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.config import Settings
from payments_pipeline.models import WebhookEvent, utcnow


def make_settings(engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "stuck_requeue_minutes": 10,
        "max_attempts": 3,
        "processing_timeout_minutes": 30,
    }
    values.update(overrides)
    return Settings(**values)


def stripe_payload(
    event_id: str,
    event_type: str = "payment_intent.succeeded",
    *,
    reference: str = "pi_1",
    amount: int = 1000,
    currency: str = "eur",
    created: int = 1_700_000_000,
) -> str:
    if event_type == "charge.refunded":
        obj = {
            "id": f"ch_{reference}",
            "object": "charge",
            "payment_intent": reference,
            "amount": amount,
            "amount_refunded": amount,
            "currency": currency,
        }
    elif event_type == "checkout.session.completed":
        obj = {
            "id": f"cs_{reference}",
            "object": "checkout.session",
            "payment_intent": reference,
            "amount_total": amount,
            "currency": currency,
            "payment_status": "paid",
        }
    else:
        obj = {"id": reference, "object": "payment_intent", "amount": amount, "currency": currency}
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": created,
            "data": {"object": obj},
        }
    )


def monetbil_payload(
    transaction_id: str, status: str = "1", *, payment_ref: str = "order-1", amount: str = "500"
) -> str:
    return urlencode(
        {
            "service": "svc",
            "transaction_id": transaction_id,
            "status": status,
            "amount": amount,
            "currency": "XAF",
            "payment_ref": payment_ref,
            "sign": "unchecked-at-processing",
        }
    )


def ago(**delta: float) -> dt.datetime:
    return utcnow() - dt.timedelta(**delta)


def fetch_event(engine: Engine, event_id: int) -> WebhookEvent:
    with engine.connect() as conn:
        event = store.get_event(conn, event_id=event_id)
    assert event is not None
    return event


class RecordingDispatcher:
    """A fake dispatcher that remembers what it was handed (thread-safe append)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def dispatch(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.events]

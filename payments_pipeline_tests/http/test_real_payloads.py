"""Real Stripe payloads, byte for byte as public projects recorded them, through the receiver.

They live beside the checkout, in the team's fixtures folder (`shared/fixtures/real-payloads`;
its SOURCES.md names each repository, commit and blob), and are read from there, never copied
into this repository: `PAYMENTS_REAL_PAYLOADS` points elsewhere; without the folder these tests
skip, saying so. Where a test changes a payload it says what (an id made unique, `created` put
in stream order, an envelope around a bare object) and signs the result again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.http.app import create_app
from payments_pipeline.models import EventStatus, PaymentStatus

from ..helpers import make_settings
from ..helpers import payment_rows as _rows
from .support import STRIPE_SECRET, Client, stripe_headers

P = PaymentStatus
_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(
    os.environ.get("PAYMENTS_REAL_PAYLOADS")
    or _ROOT.parent / "shared" / "fixtures" / "real-payloads"
)
pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"no real payloads at {FIXTURES} (set PAYMENTS_REAL_PAYLOADS to their folder)",
)


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def _events() -> list[str]:
    """Every recorded file that is a whole Stripe event (envelope and `data.object`)."""
    if not FIXTURES.is_dir():
        return []
    return sorted(
        str(path.relative_to(FIXTURES))
        for path in FIXTURES.rglob("*.json")
        if isinstance(doc := json.loads(path.read_text()), dict)
        and doc.get("object") == "event"
        and isinstance(doc.get("data"), dict)
    )


def _unique(name: str) -> dict[str, Any]:
    """A recording with its event id made unique (the stripe-ruby-mock CLI run reuses one id
    for every event, which the gate would rightly take for one delivery repeated)."""
    event = _load(name)
    event["id"] = f"{event['id']}_{Path(name).stem}"
    return event


def _envelope(event_type: str, obj: dict[str, Any], event_id: str) -> dict[str, Any]:
    """Stripe's event envelope around a bare API object, shaped like the recorded events."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2020-08-27",
        "created": int(time.time()),
        "livemode": obj.get("livemode", False),
        "type": event_type,
        "data": {"object": obj},
    }


def _send(client: Client, event: dict[str, Any]) -> dict[str, Any]:
    """Deliver one event signed now (its bytes as given), wait for its processing."""
    body = json.dumps(event)
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    client.wait_dispatched()
    answer: dict[str, Any] = response.json()
    return answer


def test_the_recordings_are_there() -> None:
    assert len(_events()) >= 90  # stripe-ruby-mock's 88 events, dj-stripe's 11


@pytest.fixture
def sqlite_client(sqlite_engine: Engine) -> Iterator[Client]:
    """The receiver on SQLite alone: the mapping of each recording does not depend on the
    database (the scenarios in test_payment_rules.py run on all three)."""
    settings = make_settings(
        sqlite_engine, stripe_webhook_secrets=(STRIPE_SECRET,), dispatch_threads=1
    )
    with Client(create_app(settings, engine=sqlite_engine)) as client:
        yield client


@pytest.mark.parametrize("name", _events())
def test_every_recorded_event_is_accepted_and_processed(
    sqlite_client: Client, sqlite_engine: Engine, name: str
) -> None:
    answer = _send(sqlite_client, _load(name))
    assert answer["outcome"] == "dispatched"
    with sqlite_engine.connect() as conn:
        stored = store.get_event(conn, event_id=answer["event_id"])
    assert stored is not None and stored.status is EventStatus.PROCESSED, stored
    # a recording of a test-mode account never counts as real money
    assert all(not row[5] for row in _rows(sqlite_engine).values())


def test_one_recorded_payment_intent_story(client: Client, engine: Engine) -> None:
    """stripe-ruby-mock's CLI run: pi created, pi succeeded, its charge succeeded (one payment)."""
    for name in ("payment_intent.created", "payment_intent.succeeded", "charge.succeeded"):
        _send(client, _unique(f"stripe-ruby-mock/{name}.json"))
    assert _rows(engine) == {
        "pi_000000000000000000000000": (P.SUCCEEDED, 2000, 2000, 0, "usd", False)
    }


def test_a_recorded_legacy_charge_refund_has_its_own_payment(
    client: Client, engine: Engine
) -> None:
    """stripe-ruby-mock's Charges-API charge (`payment_intent: null`), captured then refunded."""
    for name in ("charge.captured", "charge.refunded"):
        _send(client, _unique(f"stripe-ruby-mock/{name}.json"))
    assert _rows(engine) == {
        "ch_000000000000000000000000": (P.REFUNDED, 100, 100, 100, "usd", False)
    }


def test_recorded_checkout_sessions(client: Client, engine: Engine) -> None:
    """Payment mode joins its PaymentIntent; setup mode and pay-rails' subscription-mode session
    (`payment_intent: null`) create no payment (the envelope added around the bare object)."""
    _send(client, _unique("stripe-ruby-mock/checkout.session.completed.payment_mode.json"))
    _send(client, _unique("stripe-ruby-mock/checkout.session.completed.setup_mode.json"))
    session = _load("pay-rails/checkout.session.completed.json")["object"]
    _send(client, _envelope("checkout.session.completed", session, "evt_pay_rails_cs"))
    assert _rows(engine) == {"pi_00000000000000": (P.SUCCEEDED, 25000, 25000, 0, "usd", False)}


def test_pay_rails_partial_refund_is_kept(client: Client, engine: Engine) -> None:
    """pay-rails' 1500 charge with one refund of 500 (`refunded: false`), in Stripe's envelope;
    its `payment_intent` (`pm_1234`, as the maintainers trimmed it) names the payment."""
    charge = _load("pay-rails/charge.refunded.json")["object"]
    _send(client, _envelope("charge.refunded", charge, "evt_pay_rails_refund"))
    assert _rows(engine) == {"pm_1234": (P.PARTIALLY_REFUNDED, 1500, 1500, 500, "usd", False)}


def test_stripe_mock_objects_in_a_stream(client: Client, engine: Engine) -> None:
    """stripe-mock's 2024-era PaymentIntent, as the intent that failed and then succeeded: the
    success event changes its `status` and `amount_received` (a capture of the whole amount)."""
    resources = _load("stripe-mock/fixtures3.json")["resources"]
    intent = resources["payment_intent"]
    _send(client, _envelope("payment_intent.payment_failed", intent, "evt_mock_failed"))
    paid = intent | {"status": "succeeded", "amount_received": intent["amount"]}
    _send(client, _envelope("payment_intent.succeeded", paid, "evt_mock_paid"))
    assert _rows(engine) == {intent["id"]: (P.SUCCEEDED, 1099, 1099, 0, "usd", False)}
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(store.payment_ledger.c.to_status)).scalars().all()
    assert sorted(statuses) == ["failed", "succeeded"]

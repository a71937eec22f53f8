"""`POST /webhooks/stripe`: signed deliveries through the gate; bad input refused, unstored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.models import EventStatus, PaymentStatus, Provider

from ..helpers import RecordingDispatcher, fetch_event
from .conftest import ClientFactory
from .support import (
    JSON_HEADERS,
    SIGN_WHEN_SENT,
    STRIPE_OLD_SECRET,
    Client,
    Refused,
    count_events,
    count_ledger,
    refusals,
    signed_when_sent,
    stripe_event,
    stripe_headers,
)

URL = "/webhooks/stripe"


def test_signed_delivery_is_recorded_then_processed(client: Client, engine: Engine) -> None:
    body = stripe_event("evt_accepted", reference="pi_accepted", amount=4200)
    response = client.post(URL, content=body, headers=stripe_headers(body))
    assert response.status_code == 200
    doc = response.json()
    assert doc["outcome"] == "dispatched" and isinstance(doc["event_id"], int)
    client.wait_dispatched()
    event = fetch_event(engine, doc["event_id"])
    assert event.provider is Provider.STRIPE and event.provider_event_id == "evt_accepted"
    assert event.event_type == "payment_intent.succeeded"
    assert event.payload == body  # the raw body, byte for byte: its signature can be rechecked
    assert event.status is EventStatus.PROCESSED and event.dispatched_at is not None
    with engine.connect() as conn:
        payment = store.get_payment(conn, provider=Provider.STRIPE, reference="pi_accepted")
    assert payment is not None and payment.status is PaymentStatus.SUCCEEDED
    assert payment.amount == 4200


def test_a_secret_being_rotated_out_still_verifies(client: Client, engine: Engine) -> None:
    body = stripe_event("evt_old_secret")
    response = client.post(
        URL, content=body, headers=stripe_headers(body, secret=STRIPE_OLD_SECRET)
    )
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    assert count_events(engine) == 1


def test_duplicate_delivery_answers_already_processed_once_processed(
    client: Client, engine: Engine
) -> None:
    body = stripe_event("evt_twice")
    first = client.post(URL, content=body, headers=stripe_headers(body))
    client.wait_dispatched()
    # Stripe re-signs every retry: a new timestamp, the same event.
    second = client.post(
        URL, content=body, headers=stripe_headers(body, timestamp=int(time.time()))
    )
    assert first.json()["outcome"] == "dispatched"
    assert second.status_code == 200
    assert second.json() == {"outcome": "already_processed", "event_id": first.json()["event_id"]}
    client.wait_dispatched()
    assert count_events(engine) == 1 and count_ledger(engine) == 1


def test_duplicate_while_in_flight_is_received_not_dispatched_again(
    make_client: ClientFactory, engine: Engine
) -> None:
    dispatcher = RecordingDispatcher()  # claims are recorded, never processed: still in flight
    client = make_client(dispatcher)
    body = stripe_event("evt_in_flight")
    outcomes = []
    for _ in range(3):
        outcomes.append(client.post(URL, content=body, headers=stripe_headers(body)).json())
    client.wait_dispatched()
    assert [o["outcome"] for o in outcomes] == ["dispatched", "received", "received"]
    assert len({o["event_id"] for o in outcomes}) == 1
    assert len(dispatcher.events) == 1


def _refusals() -> Iterator[tuple[str, dict[str, str], bytes, int, str]]:
    body = stripe_event("evt_refused")
    signed = stripe_headers(body)
    yield "missing signature", JSON_HEADERS, body.encode(), 400, "invalid_signature"
    yield (
        "wrong secret",
        stripe_headers(body, secret="whsec_other"),
        body.encode(),
        400,
        ("invalid_signature"),
    )
    tampered = body.replace("1500", "1")
    yield "tampered body", signed, tampered.encode(), 400, "invalid_signature"
    stale = stripe_headers(body, timestamp=int(time.time()) - 301)
    yield "stale timestamp (replay)", stale, body.encode(), 400, "invalid_signature"
    garbage = {**JSON_HEADERS, "stripe-signature": "t=abc,v1=zz"}
    yield "malformed signature header", garbage, body.encode(), 400, "invalid_signature"
    not_utf8 = b'{"id": "\xff"}'
    yield "body not UTF-8", signed, not_utf8, 400, "invalid_signature"
    text = {**signed, "content-type": "text/plain"}
    yield "wrong content type", text, body.encode(), 415, "unsupported_media_type"
    form = {**signed, "content-type": "application/x-www-form-urlencoded"}
    yield "form content type", form, body.encode(), 415, "unsupported_media_type"
    missing = {"stripe-signature": signed["stripe-signature"]}
    yield "no content type", missing, body.encode(), 415, "unsupported_media_type"
    for name, bad in [
        ("not JSON", "{not json"),
        ("a JSON array", "[1, 2]"),
        ("no id", json.dumps({"type": "payment_intent.succeeded", "created": 1})),
        ("blank type", json.dumps({"id": "evt_x", "type": " ", "created": 1})),
        ("id too long", json.dumps({"id": "e" * 256, "type": "t", "created": 1})),
        ("created not a number", json.dumps({"id": "evt_x", "type": "t", "created": "now"})),
    ]:
        headers = {**JSON_HEADERS, "stripe-signature": SIGN_WHEN_SENT}
        yield f"signed but {name}", headers, bad.encode(), 400, "malformed_payload"


@pytest.mark.parametrize(
    "case", refusals((name, "POST", URL, *rest) for name, *rest in _refusals())
)
def test_bad_input_is_refused_and_nothing_is_stored(
    make_client: ClientFactory, engine: Engine, case: Refused
) -> None:
    dispatcher = RecordingDispatcher()
    client = make_client(dispatcher)
    case.send(client, signed_when_sent(case.headers, case.content))
    assert count_events(engine) == 0
    client.wait_dispatched()
    assert dispatcher.events == []


def test_no_secret_configured_refuses_every_delivery(
    make_client: ClientFactory, engine: Engine
) -> None:
    client = make_client(stripe_webhook_secrets=())
    body = stripe_event("evt_unconfigured")
    response = client.post(URL, content=body, headers=stripe_headers(body))
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_signature",
        "detail": "no Stripe webhook secret is configured",
    }
    assert count_events(engine) == 0


def _padded(event_id: str, size: int) -> str:
    body = stripe_event(event_id)
    return body[:-1] + " " * (size - len(body)) + "}"


def test_body_limit_is_inclusive_and_refuses_one_byte_more(
    make_client: ClientFactory, engine: Engine
) -> None:
    client = make_client(max_body_bytes=2048)
    at_limit = _padded("evt_at_limit", 2048)
    over = _padded("evt_over_limit", 2049)
    assert len(at_limit.encode()) == 2048 and len(over.encode()) == 2049
    ok = client.post(URL, content=at_limit, headers=stripe_headers(at_limit))
    refused = client.post(URL, content=over, headers=stripe_headers(over))
    assert ok.status_code == 200
    assert refused.status_code == 413 and refused.json()["error"] == "payload_too_large"
    assert count_events(engine) == 1


def test_streamed_body_without_length_is_cut_at_the_limit(
    make_client: ClientFactory, engine: Engine
) -> None:
    client = make_client(max_body_bytes=4096)
    sent: list[int] = []

    async def chunks() -> object:
        for _ in range(1000):  # 1 MB offered in 1 KiB chunks, with no Content-Length
            sent.append(1)
            yield b" " * 1024

    body = stripe_event("evt_streamed")
    response = client.post(URL, content=chunks(), headers=stripe_headers(body))
    assert response.status_code == 413
    assert len(sent) < 1000  # reading stopped early: the rest was never pulled in
    assert count_events(engine) == 0


def test_wrong_method_and_unknown_provider(client: Client, engine: Engine) -> None:
    wrong_method = client.get(URL)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"] == "method_not_allowed"
    body = stripe_event("evt_elsewhere")
    unknown = client.post("/webhooks/paypal", content=body, headers=stripe_headers(body))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_provider"
    assert "stripe, monetbil" in unknown.json()["detail"]
    assert client.get("/nowhere").json()["error"] == "not_found"
    assert count_events(engine) == 0


def test_non_ascii_body_is_stored_verbatim(client: Client, engine: Engine) -> None:
    # Raw UTF-8 (4-byte characters included), as Stripe sends customer-entered text.
    body = stripe_event("evt_unicode")[:-1] + ',"description":"Café 北京 💳"}'
    response = client.post(URL, content=body.encode(), headers=stripe_headers(body))
    assert response.status_code == 200
    assert fetch_event(engine, response.json()["event_id"]).payload == body

"""No refusal body repeats a value from the request (docs/receiver.md, Status codes).

A marker goes into every position a refusal can be about (Content-Type, the path, the method's
target, header values, Monetbil field names and values, Stripe event fields, checkPayment's
comparison) and no response body may contain it, in any case. Each request must also really be
refused, with the status and code expected, so the test cannot pass by accident.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from payments_pipeline.providers import monetbil, stripe

from .conftest import ClientFactory
from .support import (
    FORM_HEADERS,
    JSON_HEADERS,
    MONETBIL_SECRET,
    SIGN_WHEN_SENT,
    STRIPE_SECRET,
    Refused,
    count_events,
    form,
    monetbil_fields,
    refusals,
    signed_when_sent,
    stripe_event,
)
from .test_monetbil_check import FakeCheckPayment, fake_check  # noqa: F401 (the fixture)

MARKER = "zq7marker"
STRIPE = "/webhooks/stripe"
MONETBIL = "/webhooks/monetbil"

Case = tuple[str, str, str, dict[str, str], bytes, int, str]


def _signed_stripe(body: str) -> dict[str, str]:
    return {**JSON_HEADERS, "stripe-signature": SIGN_WHEN_SENT}


def _cases() -> Iterator[Case]:
    good_stripe = stripe_event("evt_markers")
    good_form = form(monetbil_fields("tx_markers")).encode()
    yield (
        "content type (stripe)",
        "POST",
        STRIPE,
        {"content-type": f"text/{MARKER}"},
        (good_stripe.encode()),
        415,
        "unsupported_media_type",
    )
    yield (
        "content type (monetbil)",
        "POST",
        MONETBIL,
        {"content-type": MARKER},
        good_form,
        415,
        ("unsupported_media_type"),
    )
    yield (
        "provider in the path",
        "POST",
        f"/webhooks/{MARKER}",
        JSON_HEADERS,
        b"{}",
        404,
        ("unknown_provider"),
    )
    yield (
        "provider in the path (GET)",
        "GET",
        f"/webhooks/{MARKER}?a={MARKER}",
        {},
        b"",
        404,
        ("unknown_provider"),
    )
    yield "unknown path", "GET", f"/{MARKER}/{MARKER}", {}, b"", 404, "not_found"
    yield "wrong method", "DELETE", STRIPE, {"x-note": MARKER}, b"", 405, "method_not_allowed"
    yield (
        "wrong method (healthz)",
        "POST",
        f"/healthz?{MARKER}",
        {},
        b"",
        405,
        ("method_not_allowed"),
    )
    stale = stripe.sign_payload(good_stripe, STRIPE_SECRET, 1_000_000 + len(MARKER))
    for name, signature in (("signature header", MARKER), ("stale signature", stale)):
        headers = {**JSON_HEADERS, "stripe-signature": signature}
        yield name, "POST", STRIPE, headers, good_stripe.encode(), 400, "invalid_signature"
    junk = f"{MARKER} not json"
    yield (
        "signed junk",
        "POST",
        STRIPE,
        _signed_stripe(junk),
        junk.encode(),
        400,
        ("malformed_payload"),
    )
    long_id = json.dumps({"id": MARKER * 40, "type": "x", "created": 1})
    yield (
        "long event id",
        "POST",
        STRIPE,
        _signed_stripe(long_id),
        long_id.encode(),
        400,
        ("malformed_payload"),
    )
    bad_created = json.dumps({"id": "evt_1", "type": MARKER, "created": MARKER})
    yield (
        "bad created",
        "POST",
        STRIPE,
        _signed_stripe(bad_created),
        bad_created.encode(),
        400,
        ("malformed_payload"),
    )
    unknown_name = form(monetbil_fields("tx_markers", **{MARKER: MARKER})).encode()
    yield "field name", "POST", MONETBIL, FORM_HEADERS, unknown_name, 400, "unknown_field"
    query = f"{MONETBIL}?{form(monetbil_fields('tx_markers', **{MARKER: '1'}))}"
    yield "field name (query string)", "GET", query, {}, b"", 400, "unknown_field"
    duplicate = good_form + f"&payment_ref={MARKER}".encode()
    yield "field given twice", "POST", MONETBIL, FORM_HEADERS, duplicate, 400, "duplicate_field"
    status = form(monetbil_fields("tx_markers", status=MARKER)).encode()
    yield "field value (status)", "POST", MONETBIL, FORM_HEADERS, status, 400, "malformed_payload"
    long_ref = form(monetbil_fields("tx_markers", payment_ref=MARKER * 40)).encode()
    yield (
        "field value (reference)",
        "POST",
        MONETBIL,
        FORM_HEADERS,
        long_ref,
        400,
        ("malformed_payload"),
    )
    bad_sign = form({**monetbil_fields("tx_markers"), "sign": MARKER}).encode()
    yield "sign", "POST", MONETBIL, FORM_HEADERS, bad_sign, 400, "invalid_signature"
    not_utf8 = f"transaction_id={MARKER}&status=1&x=".encode() + b"\xff"
    yield "not UTF-8", "POST", MONETBIL, FORM_HEADERS, not_utf8, 400, "malformed_payload"
    yield (
        "query beside nothing",
        "GET",
        f"{MONETBIL}?{MARKER}=",
        {},
        b"",
        400,
        ("malformed_payload"),
    )


@pytest.mark.parametrize("case", refusals(_cases()))
def test_no_refusal_body_echoes_the_request(
    make_client: ClientFactory, engine: Engine, case: Refused
) -> None:
    client = make_client(max_body_bytes=4096)
    signed = signed_when_sent(case.headers, case.content)
    response = case.send(client, {**signed, "x-marker": MARKER, "user-agent": MARKER})
    _assert_clean(response.text, response.headers)
    assert count_events(engine) == 0


def test_a_body_over_the_limit_does_not_echo(make_client: ClientFactory, engine: Engine) -> None:
    client = make_client(max_body_bytes=64)
    response = client.post(
        MONETBIL, content=form(monetbil_fields("tx_big", message=MARKER * 10)), headers=FORM_HEADERS
    )
    assert response.status_code == 413
    _assert_clean(response.text, response.headers)


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        ({"transaction": {"status": 0, "message": MARKER}}, 409, "payment_not_confirmed"),
        ({"transaction": {"status": 1, "payment_ref": MARKER}}, 409, "payment_not_confirmed"),
        ({"transaction": {"status": 1, "msisdn": "237600000001"}}, 409, "payment_not_confirmed"),
        ({"transaction": {"status": 1, "amount": MARKER}}, 503, "confirmation_unavailable"),
    ],
    ids=["not a success", "another reference", "another number", "unreadable amount"],
)
def test_checkpayment_refusals_do_not_echo(
    make_client: ClientFactory,
    engine: Engine,
    fake_check: FakeCheckPayment,  # noqa: F811 (the imported fixture)
    answer: dict[str, Any],
    status: int,
    error: str,
) -> None:
    fake_check.answer = (200, json.dumps(answer).encode())
    client = make_client(monetbil_check_payment_url=fake_check.url)
    fields = monetbil_fields(f"tx_{MARKER}", msisdn=f"2376{len(MARKER)}0000000")
    fields = monetbil.sign_fields({**fields, "payment_ref": f"order-{MARKER}"}, MONETBIL_SECRET)
    response = client.post(MONETBIL, content=form(fields), headers=FORM_HEADERS)
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    _assert_clean(response.text, response.headers)
    assert count_events(engine) == 0


def _assert_clean(text: str, headers: Any) -> None:
    for marker in (MARKER, MARKER.upper()):
        assert marker not in text, text
        assert all(marker not in value for value in headers.values()), headers

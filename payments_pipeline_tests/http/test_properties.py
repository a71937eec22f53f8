"""Property: whatever headers and body arrive, the receiver answers on purpose.

Hypothesis throws arbitrary bodies and headers at both endpoints: junk, near-misses, and
deliveries signed with the real secret around arbitrary content (so the checks past the signature
are reached too). Every answer must be one of the documented statuses, never a 5xx other than 503,
and a refusal must leave the table as it was.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from payments_pipeline.providers import monetbil, stripe

from .conftest import ClientFactory
from .support import MONETBIL_SECRET, STRIPE_SECRET, count_events

DOCUMENTED = {200, 400, 404, 405, 409, 413, 415, 503}
PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,24}", fullmatch=True).filter(
    lambda n: n.lower() not in {"content-length", "transfer-encoding", "host", "connection"}
)
# Header values as bytes: anything a client can put on the wire except line breaks and NUL.
header_values = st.binary(max_size=80).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
event_like = st.fixed_dictionaries(
    {"id": scalars, "type": scalars, "created": scalars},
    optional={"data": st.dictionaries(st.text(max_size=8), scalars, max_size=3)},
)
# Close enough to a real event that a valid signature takes it through to the gate.
plausible_events = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"evt_[A-Za-z0-9]{1,30}", fullmatch=True) | st.text(max_size=260),
        "type": st.sampled_from(
            ["payment_intent.succeeded", "charge.refunded", "checkout.session.completed"]
        )
        | st.text(min_size=1, max_size=40),
        "created": st.integers(min_value=-10, max_value=2**40),
    },
    optional={
        "data": st.fixed_dictionaries(
            {"object": st.dictionaries(st.sampled_from(["id", "amount", "currency"]), scalars)}
        )
    },
)
json_bodies = st.one_of(
    event_like.map(json.dumps),
    plausible_events.map(json.dumps),
    plausible_events.map(lambda e: json.dumps(e, ensure_ascii=False)),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6).map(json.dumps),
)
bodies = st.one_of(st.binary(max_size=400), st.text().map(str.encode), json_bodies.map(str.encode))


@pytest.fixture
def checked(make_client: ClientFactory, engine: Engine) -> Any:
    """Send one request and check the property; one app for all examples of a test."""
    client = make_client(max_body_bytes=2048)

    def send(method: str, url: str, content: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        before = count_events(engine)
        response = client.request(method, url, content=content, headers=headers)
        event(f"status {response.status_code}")  # --hypothesis-show-statistics shows the spread
        assert response.status_code in DOCUMENTED, (response.status_code, response.text)
        assert not (500 <= response.status_code != 503)
        assert response.headers["content-type"] == "application/json"
        doc = response.json()
        if response.status_code == 200:
            assert doc["outcome"] in {"dispatched", "received", "already_processed"}
        else:
            assert doc["error"] and doc["detail"]
            assert count_events(engine) == before  # refused: nothing stored

    return send


def _headers(
    extra: dict[str, bytes], content_type: str | None, more: dict[str, str]
) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode(), v) for k, v in extra.items()]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    headers += [(k.encode(), v.encode("latin-1")) for k, v in more.items()]
    return headers


@PROPERTY_SETTINGS
@given(
    body=bodies,
    signing=st.sampled_from(["valid", "valid", "valid", "none", "stale", "other secret", "junk"]),
    junk=st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
    content_type=st.just("application/json") | content_types,
    extra=st.dictionaries(header_names, header_values, max_size=4),
    method=st.sampled_from(["POST", "POST", "POST", "POST", "GET", "PUT"]),
)
def test_stripe_endpoint_answers_every_request_on_purpose(
    checked: Any,
    body: bytes,
    signing: str,
    junk: str,
    content_type: str | None,
    extra: dict[str, bytes],
    method: str,
) -> None:
    signature: dict[str, str] = {}
    text = body.decode("utf-8", errors="replace")
    if signing == "valid":
        signature = {"stripe-signature": stripe.sign_payload(text, STRIPE_SECRET)}
        body = text.encode()
    elif signing == "stale":
        signature = {
            "stripe-signature": stripe.sign_payload(text, STRIPE_SECRET, int(time.time()) - 400)
        }
        body = text.encode()
    elif signing == "other secret":
        signature = {"stripe-signature": stripe.sign_payload(text, "whsec_other")}
    elif signing == "junk":
        signature = {"stripe-signature": junk}
    checked(method, "/webhooks/stripe", body, _headers(extra, content_type, signature))


field_names = st.sampled_from(
    ["transaction_id", "status", "amount", "currency", "payment_ref", "item_ref", "message"]
) | st.text(st.characters(codec="utf-8"), min_size=0, max_size=10)
field_values = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["1", "0", "-1", "7", "8", "9", "XAF", "tx_1"]
)


@PROPERTY_SETTINGS
@given(
    fields=st.builds(
        lambda base, more: {**more, **base},
        st.fixed_dictionaries(
            {},
            optional={
                "transaction_id": st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
                | field_values,
                "status": st.sampled_from(["1", "0", "-1", "7", "8", "9"]) | field_values,
            },
        ),
        st.dictionaries(field_names, field_values, max_size=5),
    ),
    sign=st.sampled_from(["valid", "valid", "none", "wrong"]),
    where=st.sampled_from(["body", "query", "both", "raw body"]),
    raw=st.binary(max_size=300),
    content_type=st.just("application/x-www-form-urlencoded") | content_types,
    extra=st.dictionaries(header_names, header_values, max_size=3),
    method=st.sampled_from(["POST", "POST", "GET", "GET", "DELETE"]),
)
def test_monetbil_endpoint_answers_every_request_on_purpose(
    checked: Any,
    fields: dict[str, str],
    sign: str,
    where: str,
    raw: bytes,
    content_type: str | None,
    extra: dict[str, bytes],
    method: str,
) -> None:
    if sign == "valid":
        fields = monetbil.sign_fields(fields, MONETBIL_SECRET)
    elif sign == "wrong":
        fields = {**fields, "sign": "0" * 32}
    encoded = urlencode(fields)
    url = "/webhooks/monetbil"
    content = b""
    if where in {"query", "both"}:
        url += "?" + encoded
    if where in {"body", "both"}:
        content = encoded.encode()
    if where == "raw body":
        content = raw
    checked(method, url, content, _headers(extra, content_type, {}))

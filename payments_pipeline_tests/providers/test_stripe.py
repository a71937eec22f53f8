"""Stripe provider: signature verification via the SDK, event header parsing, payment updates."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest
import stripe as stripe_sdk
from hypothesis import given
from hypothesis import strategies as st

from payments_pipeline.models import PaymentStatus, Provider
from payments_pipeline.providers import stripe
from payments_pipeline.providers.errors import PayloadError, SignatureError

SECRET = "whsec_primary_1f2e3d4c5b6a"
OTHER = "whsec_rotated_9a8b7c6d5e4f"
T = 1_700_000_000


def event(event_type: str = "payment_intent.succeeded", **obj: Any) -> str:
    body = {
        "id": "evt_1",
        "object": "event",
        "type": event_type,
        "created": T,
        "data": {"object": obj},
    }
    return json.dumps(body)


PAYLOAD = event(id="pi_1", amount=1000, currency="EUR")


def hmac_hex(payload: str, secret: str, timestamp: int) -> str:
    """Independent of the SDK: HMAC-SHA256 of "<t>.<body>"."""
    return hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()


# --- signatures -------------------------------------------------------------------------------


def test_sign_payload_matches_an_independent_hmac() -> None:
    assert stripe.sign_payload(PAYLOAD, SECRET, T) == f"t={T},v1={hmac_hex(PAYLOAD, SECRET, T)}"
    assert stripe.sign_payload(PAYLOAD.encode(), SECRET, T) == stripe.sign_payload(
        PAYLOAD, SECRET, T
    )


@pytest.mark.parametrize("payload", [PAYLOAD, PAYLOAD.encode()])
def test_valid_signature_is_accepted(payload: str | bytes) -> None:
    stripe.verify_signature(payload, stripe.sign_payload(PAYLOAD, SECRET, T), [SECRET], now=T)


def test_sign_payload_defaults_to_the_current_time() -> None:
    stripe.verify_signature(PAYLOAD, stripe.sign_payload(PAYLOAD, SECRET), [SECRET])


def test_any_of_several_v1_signatures_may_match() -> None:
    header = f"t={T},v1={'0' * 64},v1={hmac_hex(PAYLOAD, SECRET, T)}"
    stripe.verify_signature(PAYLOAD, header, [SECRET], now=T)


def test_rotation_second_secret_matches() -> None:
    header = stripe.sign_payload(PAYLOAD, OTHER, T)
    stripe.verify_signature(PAYLOAD, header, [SECRET, OTHER], now=T)
    stripe.verify_signature(PAYLOAD, header, ["", OTHER], now=T)
    with pytest.raises(SignatureError, match="no signature matches"):
        stripe.verify_signature(PAYLOAD, header, [SECRET], now=T)


def test_the_sdk_is_the_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def refuse(payload: Any, header: Any, secret: str, tolerance: Any = None) -> bool:
        calls.append(secret)
        raise stripe_sdk.SignatureVerificationError("no", header, payload)

    monkeypatch.setattr(stripe_sdk.WebhookSignature, "verify_header", refuse)
    with pytest.raises(SignatureError, match="no signature matches"):
        stripe.verify_signature(PAYLOAD, stripe.sign_payload(PAYLOAD, SECRET, T), [SECRET], now=T)
    assert calls == [SECRET]


def test_tolerance_boundary() -> None:
    header = stripe.sign_payload(PAYLOAD, SECRET, T)
    stripe.verify_signature(PAYLOAD, header, [SECRET], now=T + 300)
    with pytest.raises(SignatureError, match=r"^timestamp outside tolerance$"):
        stripe.verify_signature(PAYLOAD, header, [SECRET], now=T + 301)
    stripe.verify_signature(PAYLOAD, header, [SECRET], tolerance=10, now=T + 10)
    with pytest.raises(SignatureError, match="timestamp outside tolerance"):
        stripe.verify_signature(PAYLOAD, header, [SECRET], tolerance=10, now=T + 11)


def test_tolerance_none_reverifies_stored_events_and_future_timestamps_pass() -> None:
    header = stripe.sign_payload(PAYLOAD, SECRET, T)
    stripe.verify_signature(PAYLOAD, header, [SECRET], tolerance=None, now=T + 10**8)
    stripe.verify_signature(PAYLOAD, header, [SECRET], now=T - 3600)  # like the SDK


def test_real_clock_rejects_an_old_signature() -> None:
    header = stripe.sign_payload(PAYLOAD, SECRET, T)  # 2023: long past
    with pytest.raises(SignatureError, match="timestamp outside tolerance"):
        stripe.verify_signature(PAYLOAD, header, [SECRET])


def test_an_old_forged_signature_is_a_mismatch_not_a_replay() -> None:
    header = stripe.sign_payload(PAYLOAD, "whsec_attacker", T)
    with pytest.raises(SignatureError, match="no signature matches"):
        stripe.verify_signature(PAYLOAD, header, [SECRET], now=T + 10_000)


GOOD_SIG = hmac_hex(PAYLOAD, SECRET, T)
REJECTIONS: list[tuple[str | bytes, str | None, list[str], str]] = [
    (PAYLOAD, f"t={T},v1={GOOD_SIG}", [], "no Stripe webhook secret"),
    (PAYLOAD, f"t={T},v1={GOOD_SIG}", ["", "  "], "no Stripe webhook secret"),
    (PAYLOAD, None, [SECRET], "missing Stripe-Signature"),
    (PAYLOAD, "", [SECRET], "missing Stripe-Signature"),
    (PAYLOAD, GOOD_SIG, [SECRET], "malformed"),
    (PAYLOAD, f"v1={GOOD_SIG}", [SECRET], "malformed"),
    (PAYLOAD, f"t=soon,v1={GOOD_SIG}", [SECRET], "malformed"),
    (PAYLOAD, f"t={T},v1", [SECRET], "malformed"),
    (PAYLOAD, f"t={T},v1={GOOD_SIG}\u00e9", [SECRET], "malformed"),
    (PAYLOAD, f"t={T},v0={GOOD_SIG}", [SECRET], "no v1 signature"),
    (PAYLOAD, f"t={T},v1={GOOD_SIG.upper()}", [SECRET], "no signature matches"),
    (PAYLOAD, f"t={T + 1},v1={GOOD_SIG}", [SECRET], "no signature matches"),
    (PAYLOAD + " ", f"t={T},v1={GOOD_SIG}", [SECRET], "no signature matches"),
    (PAYLOAD, f"t={T},v1={GOOD_SIG}", [OTHER], "no signature matches"),
    (b"\xff" + PAYLOAD.encode(), f"t={T},v1={GOOD_SIG}", [SECRET], "not UTF-8"),
    (PAYLOAD + "\ud800", f"t={T},v1={GOOD_SIG}", [SECRET], "not encodable"),
]


@pytest.mark.parametrize(("payload", "header", "secrets", "message"), REJECTIONS)
def test_rejections_name_the_problem_and_leak_nothing(
    payload: str | bytes, header: str | None, secrets: list[str], message: str
) -> None:
    with pytest.raises(SignatureError, match=message) as info:
        stripe.verify_signature(payload, header, secrets, now=T)
    text = str(info.value) + repr(info.value)
    for secret in (SECRET, OTHER, GOOD_SIG, GOOD_SIG.upper(), '"evt_1"', "pi_1"):
        assert secret not in text
    # No chained exception (the SDK's carries the header and the body) shows in a traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@given(payload=st.one_of(st.text(), st.binary()), header=st.one_of(st.none(), st.text()))
def test_fuzz_arbitrary_input_only_raises_signature_error(
    payload: str | bytes, header: str | None
) -> None:
    with pytest.raises(SignatureError):
        stripe.verify_signature(payload, header, [SECRET], now=T)


header_items = st.tuples(
    st.sampled_from(["t", "v1", "v0", "", "T", " t"]),
    st.sampled_from(["=", "", "=="]),
    st.one_of(st.integers(-(10**30), 10**30).map(str), st.text(max_size=70)),
)


@given(items=st.lists(header_items, max_size=5), payload=st.text(max_size=50))
def test_fuzz_header_shaped_input_only_raises_signature_error(
    items: list[tuple[str, str, str]], payload: str
) -> None:
    header = ",".join(key + eq + value for key, eq, value in items)
    with pytest.raises(SignatureError):
        stripe.verify_signature(payload, header, [SECRET], now=T)


# --- event header -----------------------------------------------------------------------------


def test_parse_event_reads_the_header() -> None:
    assert stripe.parse_event(PAYLOAD) == stripe.StripeEventHeader(
        id="evt_1", type="payment_intent.succeeded", created=T
    )
    assert stripe.parse_event(PAYLOAD.encode()).id == "evt_1"


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[1, 2]",
        '"evt_1"',
        "null",
        "[" * 100_000,
        b"\xff\xfe\x00",
        json.dumps({"type": "x", "created": T}),
        json.dumps({"id": "", "type": "x", "created": T}),
        json.dumps({"id": "   ", "type": "x", "created": T}),
        json.dumps({"id": 12, "type": "x", "created": T}),
        json.dumps({"id": "evt_\u0000", "type": "x", "created": T}),
        json.dumps({"id": "e" * 256, "type": "x", "created": T}),
        json.dumps({"id": "evt_1", "created": T}),
        json.dumps({"id": "evt_1", "type": "", "created": T}),
        json.dumps({"id": "evt_1", "type": ["x"], "created": T}),
        json.dumps({"id": "evt_1", "type": "x"}),
        json.dumps({"id": "evt_1", "type": "x", "created": "1700000000"}),
        json.dumps({"id": "evt_1", "type": "x", "created": True}),
        json.dumps({"id": "evt_1", "type": "x", "created": -1}),
        json.dumps({"id": "evt_1", "type": "x", "created": 10**20}),
    ],
)
def test_parse_event_rejects_malformed_bodies(body: str | bytes) -> None:
    with pytest.raises(PayloadError):
        stripe.parse_event(body)


@given(st.one_of(st.text(), st.binary()))
def test_fuzz_parse_event_only_raises_payload_error(body: str | bytes) -> None:
    try:
        header = stripe.parse_event(body)
    except PayloadError:
        return
    assert header.id and header.type


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(
    event_type=st.sampled_from(sorted(stripe.HANDLED_EVENT_TYPES)),
    obj=st.dictionaries(
        st.sampled_from(["id", "amount", "amount_total", "currency", "payment_intent", "refunded"]),
        json_values,
    ),
    data=json_values,
    use_obj=st.booleans(),
)
def test_fuzz_payment_update_only_raises_payload_error(
    event_type: str, obj: dict[str, Any], data: Any, use_obj: bool
) -> None:
    body = json.loads(event(event_type))
    body["data"] = {"object": obj} if use_obj else data
    try:
        update = stripe.payment_update(event_type, json.dumps(body))
    except PayloadError:
        return
    assert update is None or update.reference


# --- payment updates --------------------------------------------------------------------------


def test_handled_event_types() -> None:
    assert {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "charge.succeeded",
        "charge.refunded",
        "checkout.session.completed",
    } == stripe.HANDLED_EVENT_TYPES


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("payment_intent.succeeded", PaymentStatus.SUCCEEDED),
        ("payment_intent.payment_failed", PaymentStatus.FAILED),
        ("payment_intent.canceled", PaymentStatus.CANCELLED),
    ],
)
def test_payment_intent_events(event_type: str, status: PaymentStatus) -> None:
    update = stripe.payment_update(
        event_type, event(event_type, id="pi_9", amount=2500, currency="USD")
    )
    assert update is not None
    assert (update.provider, update.reference, update.status) == (Provider.STRIPE, "pi_9", status)
    assert (update.amount, update.currency) == (2500, "usd")
    assert update.occurred_at == dt.datetime(2023, 11, 14, 22, 13, 20)
    assert update.occurred_at.tzinfo is None


def refund(captured: int, refunded: int) -> str:
    """`charge.refunded` for a charge of PaymentIntent pi_1, `refunded` of `captured` so far."""
    return event(
        "charge.refunded",
        id="ch_1",
        payment_intent="pi_1",
        amount=captured,
        amount_captured=captured,
        amount_refunded=refunded,
        refunded=refunded == captured,
    )


def test_charge_refunded_uses_the_payment_intent_or_the_charge() -> None:
    body = refund(700, 700)
    update = stripe.payment_update("charge.refunded", body)
    assert update is not None
    assert (update.reference, update.status) == ("pi_1", PaymentStatus.REFUNDED)
    assert (update.amount, update.amount_received, update.amount_refunded) == (700, 700, 700)
    assert update.amounts_fill_only  # a refund never rewrites the PaymentIntent's amounts
    bare = event("charge.refunded", id="ch_1", payment_intent=None, amount=700, amount_refunded=700)
    update = stripe.payment_update("charge.refunded", bare)
    assert update is not None
    assert (update.reference, update.currency) == ("ch_1", None)
    expanded = event(
        "charge.refunded", id="ch_1", payment_intent={"id": "pi_x"}, amount=1, amount_refunded=1
    )
    assert stripe.payment_update("charge.refunded", expanded).reference == "pi_x"  # type: ignore[union-attr]


def test_partial_refund_is_partially_refunded() -> None:
    body = refund(1500, 500)
    update = stripe.payment_update("charge.refunded", body)
    assert update is not None
    assert (update.status, update.amount_received, update.amount_refunded) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        1500,
        500,
    )


def test_a_legacy_charge_is_its_own_payment() -> None:
    body = event("charge.succeeded", id="ch_9", payment_intent=None, amount=900, captured=True)
    update = stripe.payment_update("charge.succeeded", body)
    assert update is not None
    assert (update.reference, update.status, update.amount, update.amount_received) == (
        "ch_9",
        PaymentStatus.SUCCEEDED,
        900,
        900,
    )
    assert not update.amounts_fill_only
    with_intent = event("charge.succeeded", id="ch_9", payment_intent="pi_9", amount=900)
    joined = stripe.payment_update("charge.succeeded", with_intent)
    assert joined is not None and joined.reference == "pi_9" and joined.amounts_fill_only


def test_manual_capture_receives_less_than_the_amount() -> None:
    body = event(id="pi_m", amount=2000, amount_received=1500, currency="usd")
    update = stripe.payment_update("payment_intent.succeeded", body)
    assert update is not None and (update.amount, update.amount_received) == (2000, 1500)


@pytest.mark.parametrize(
    ("payment_status", "status"),
    [("paid", PaymentStatus.SUCCEEDED), ("unpaid", PaymentStatus.PENDING)],
)
def test_checkout_session_in_payment_mode_joins_its_payment_intent(
    payment_status: str, status: PaymentStatus
) -> None:
    kind = "checkout.session.completed"
    body = event(
        kind,
        id="cs_1",
        mode="payment",
        payment_intent="pi_7",
        amount_total=990,
        payment_status=payment_status,
    )
    update = stripe.payment_update(kind, body)
    assert update is not None
    assert (update.reference, update.status, update.amount) == ("pi_7", status, 990)
    assert update.amounts_fill_only


@pytest.mark.parametrize(
    "session",
    [
        {"mode": "subscription", "payment_intent": None, "payment_status": "paid"},
        {"mode": "setup", "payment_intent": None, "payment_status": "no_payment_required"},
        {"mode": "payment", "payment_intent": None, "payment_status": "no_payment_required"},
    ],
)
def test_checkout_session_without_a_payment_intent_moves_no_payment(
    session: dict[str, Any],
) -> None:
    kind = "checkout.session.completed"
    assert stripe.payment_update(kind, event(kind, id="cs_1", amount_total=990, **session)) is None


def test_livemode_is_read_from_the_event() -> None:
    live = json.loads(event(id="pi_1", amount=1)) | {"livemode": True}
    test = json.loads(event(id="pi_1", amount=1)) | {"livemode": False}
    assert stripe.payment_update("payment_intent.succeeded", json.dumps(live)).livemode  # type: ignore[union-attr]
    assert not stripe.payment_update("payment_intent.succeeded", json.dumps(test)).livemode  # type: ignore[union-attr]
    junk = json.loads(event(id="pi_1")) | {"livemode": "no"}
    with pytest.raises(PayloadError, match="livemode"):
        stripe.payment_update("payment_intent.succeeded", json.dumps(junk))


def test_missing_amount_and_currency_are_none() -> None:
    update = stripe.payment_update("payment_intent.succeeded", event(id="pi_1"))
    assert update is not None
    assert (update.amount, update.currency) == (None, None)


@pytest.mark.parametrize(
    "event_type",
    [
        "payment_intent.created",
        "customer.created",
        "",
        "PAYMENT_INTENT.SUCCEEDED",
    ],
)
def test_unknown_types_are_none_even_with_junk_payloads(event_type: str) -> None:
    assert stripe.payment_update(event_type, event(event_type or "x", id="pi_1")) is None
    assert stripe.payment_update(event_type, "not json") is None


@pytest.mark.parametrize(
    ("event_type", "body", "message"),
    [
        ("payment_intent.succeeded", event(amount=1), "data.object.id"),
        ("payment_intent.succeeded", event(id=""), "data.object.id"),
        (
            "charge.refunded",
            event("charge.refunded", payment_intent=None, amount_refunded=1),
            "data.object.id",
        ),
        (
            "charge.refunded",
            event("charge.refunded", payment_intent=5, amount_refunded=1),
            "payment_intent",
        ),
        ("charge.refunded", event("charge.refunded", id="ch_1"), "amount_refunded"),
        (
            "checkout.session.completed",
            event("checkout.session.completed", payment_intent=7),
            "payment_intent",
        ),
        ("payment_intent.succeeded", event(id="pi_1", amount="10"), "amount"),
        ("payment_intent.succeeded", event(id="pi_1", amount=-1), "amount"),
        ("payment_intent.succeeded", event(id="pi_1", amount=True), "amount"),
        ("payment_intent.succeeded", event(id="pi_1", amount=10**18), "amount"),
        ("payment_intent.succeeded", event(id="pi_1", currency="euro"), "currency"),
        ("payment_intent.succeeded", event(id="pi_1", currency=978), "currency"),
        ("payment_intent.canceled", event(id="pi_1"), "does not match"),
        (
            "payment_intent.succeeded",
            json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "created": T}),
            "data.object",
        ),
        (
            "payment_intent.succeeded",
            json.dumps(
                {
                    "id": "evt_1",
                    "type": "payment_intent.succeeded",
                    "created": T,
                    "data": {"object": []},
                }
            ),
            "data.object",
        ),
        ("payment_intent.succeeded", "{", "JSON"),
    ],
)
def test_handled_types_missing_what_they_need_raise(
    event_type: str, body: str, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        stripe.payment_update(event_type, body)

"""Stripe webhooks: verify `Stripe-Signature`, read the event header, map events to payments.

Signature: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, HMAC-SHA256 of `"<t>.<raw body>"` with
the endpoint secret. The official `stripe` SDK (`stripe.WebhookSignature.verify_header`) is the
verifier: it parses the header and compares the HMAC in constant time. The SDK reads the clock
itself (`time.time()`), so it is called with its own tolerance check off and the tolerance is
applied here against `now`, with the timestamp the SDK's own header parser extracted. Like the
SDK, only a timestamp older than `now - tolerance` is refused; a future one is accepted (clock
skew), since forging it needs the secret.

Several secrets may be valid at once while one is rotated: a delivery is accepted if any matches.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import stripe

from payments_pipeline.models import PaymentStatus, PaymentUpdate, Provider
from payments_pipeline.providers.errors import PayloadError, SignatureError, check_identifier

DEFAULT_TOLERANCE = 300

_PAYMENT_INTENT_STATUS: dict[str, PaymentStatus] = {
    "payment_intent.succeeded": PaymentStatus.SUCCEEDED,
    "payment_intent.payment_failed": PaymentStatus.FAILED,
    "payment_intent.canceled": PaymentStatus.CANCELLED,
}
CHARGE_SUCCEEDED = "charge.succeeded"
CHARGE_REFUNDED = "charge.refunded"
CHECKOUT_COMPLETED = "checkout.session.completed"
HANDLED_EVENT_TYPES: frozenset[str] = frozenset(
    {*_PAYMENT_INTENT_STATUS, CHARGE_SUCCEEDED, CHARGE_REFUNDED, CHECKOUT_COMPLETED}
)

# Year 9999: beyond it a datetime cannot hold the timestamp.
_MAX_CREATED = 253_402_300_799
_EPOCH = dt.datetime(1970, 1, 1)
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_MAX_AMOUNT = 10**18 - 1  # fits a BIGINT column


@dataclass(frozen=True, slots=True)
class StripeEventHeader:
    """What the gate needs from any Stripe event, handled type or not."""

    id: str
    type: str
    created: int


def _payload_text(payload: str | bytes) -> str:
    if isinstance(payload, bytes | bytearray):
        try:
            return bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("payload is not UTF-8; its signature cannot match") from None
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError:
        raise SignatureError("payload is not encodable text; its signature cannot match") from None
    return payload


def _sdk_accepts(text: str, header: str, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None)
    except (stripe.SignatureVerificationError, UnicodeError):
        # UnicodeError: a secret that is not encodable text (a mangled environment value).
        return False
    return True


def verify_signature(
    payload: str | bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int | None = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> None:
    """Raise `SignatureError` unless `header` signs `payload` with one of `secrets`, recently.

    `payload` must be the raw body exactly as received. `tolerance=None` skips the age check: for
    re-verifying a stored event long after it arrived. `now` (unix seconds) is for tests.
    """
    usable = [s for s in secrets if s and s.strip()]
    if not usable:
        raise SignatureError("no Stripe webhook secret is configured")
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    text = _payload_text(payload)
    scheme = stripe.WebhookSignature.EXPECTED_SCHEME
    try:
        # Non-ASCII could never match a hex digest, and the SDK's compare would raise on it.
        if not header.isascii():
            raise ValueError
        timestamp, signatures = stripe.WebhookSignature._get_timestamp_and_signatures(
            header, scheme
        )
    except Exception:  # the SDK's parser raises IndexError/ValueError on junk; all mean the same
        raise SignatureError("malformed Stripe-Signature header") from None
    if not signatures:
        raise SignatureError(f"no {scheme} signature in Stripe-Signature header")
    if not any(_sdk_accepts(text, header, secret) for secret in usable):
        raise SignatureError("no signature matches a configured secret")
    if tolerance is not None:
        current = time.time() if now is None else now
        if timestamp < current - tolerance:
            raise SignatureError("timestamp outside tolerance")


def sign_payload(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """A valid `Stripe-Signature` value for `payload`: for tests, benchmarks and load generators."""
    text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
    header: str = stripe.WebhookSignature.generate_signature_header(text, secret, timestamp)
    return header


def _load_event(payload: str | bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise PayloadError("body is not valid JSON") from None
    if not isinstance(event, dict):
        raise PayloadError("body is not a JSON object")
    return event


def _header(event: dict[str, Any]) -> StripeEventHeader:
    event_id = check_identifier(event.get("id"), "event id")
    event_type = check_identifier(event.get("type"), "event type")
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise PayloadError("event created is missing or not an integer")
    if not 0 <= created <= _MAX_CREATED:
        raise PayloadError("event created is out of range")
    return StripeEventHeader(id=event_id, type=event_type, created=created)


def event_header(event: dict[str, Any]) -> StripeEventHeader:
    """`parse_event` for an event already read from JSON (a page the Events API listed)."""
    return _header(event)


def parse_event(payload: str | bytes) -> StripeEventHeader:
    """Read id (`evt_...`), type and `created` from a body; `PayloadError` if any is unusable.

    Run it after `verify_signature`: the gate keys the event on the id and stores the type.
    """
    return _header(_load_event(payload))


def _amount(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_AMOUNT:
        raise PayloadError(f"data.object.{key} is not a non-negative integer of at most 18 digits")
    return value


def _currency(obj: dict[str, Any]) -> str | None:
    value = obj.get("currency")
    if value is None:
        return None
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise PayloadError("data.object.currency is not a three-letter code")
    return value.lower()


def _id_of(value: object) -> object:
    """An expandable field holds an id, or the expanded object whose `id` it is."""
    return value.get("id") if isinstance(value, dict) else value


def _livemode(event: dict[str, Any]) -> bool:
    value = event.get("livemode", True)
    if not isinstance(value, bool):
        raise PayloadError("event livemode is not a boolean")
    return value


def _charge(obj: dict[str, Any], event_type: str, common: dict[str, Any]) -> PaymentUpdate | None:
    """A charge's event: its PaymentIntent's payment, or (legacy Charges API, no PaymentIntent)
    a payment of its own keyed by the charge id."""
    intent = _id_of(obj.get("payment_intent"))
    reference = check_identifier(
        obj.get("id") if intent is None else intent,
        "data.object.id" if intent is None else "data.object.payment_intent",
    )
    amount = _amount(obj, "amount")
    captured = _amount(obj, "amount_captured")
    if captured is None and obj.get("captured") is True:
        captured = amount  # API versions before amount_captured
    if event_type == CHARGE_SUCCEEDED:
        # A charge that succeeds is a payment received. With a PaymentIntent its own events tell
        # the story; the charge only fills what the payment does not know yet.
        return PaymentUpdate(
            reference=reference,
            status=PaymentStatus.SUCCEEDED,
            amount=amount,
            amount_received=captured,
            amounts_fill_only=intent is not None,
            **common,
        )
    refunded = _amount(obj, "amount_refunded")
    if refunded is None:
        raise PayloadError("data.object.amount_refunded is missing")
    received = captured if captured is not None else amount
    full = obj.get("refunded") is True or (received is not None and refunded >= received)
    if refunded == 0 and not full:
        return None  # a refund of nothing (a refund that failed or was reversed): no trace
    return PaymentUpdate(
        reference=reference,
        status=PaymentStatus.REFUNDED if full else PaymentStatus.PARTIALLY_REFUNDED,
        amount=amount,
        amount_received=received,
        amount_refunded=refunded,
        amounts_fill_only=True,  # the charge's amounts never rewrite the PaymentIntent's
        **common,
    )


def payment_update(event_type: str, payload: str) -> PaymentUpdate | None:
    """What a stored Stripe event says about its payment; None for types that move no payment.

    `payload` is the stored raw body. The reference is the PaymentIntent id whenever the event has
    one, so a checkout session, its PaymentIntent and its charge's refund land on one payment; a
    charge without a PaymentIntent (legacy Charges API) is its own payment, keyed by `ch_...`.
    A PaymentIntent's `amount` is what the payment is for and its `amount_received` what was
    captured (a manual capture of 1500 of 2000 receives 1500). `charge.refunded` carries the
    cumulative `amount_refunded`: `partially_refunded` below the amount received, `refunded` at it.
    A Checkout Session in `payment` mode joins its PaymentIntent's payment; one without a
    PaymentIntent (`subscription` or `setup` mode, `no_payment_required`) moves no payment: the
    invoice's PaymentIntent is the payment. `livemode: false` marks a test-mode payment.
    Raises `PayloadError` when a handled type lacks what it needs.
    """
    if event_type not in HANDLED_EVENT_TYPES:
        return None
    event = _load_event(payload)
    header = _header(event)
    if header.type != event_type:
        raise PayloadError("event type does not match the payload's type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise PayloadError("data.object is missing or not an object")
    common: dict[str, Any] = {
        "provider": Provider.STRIPE,
        "currency": _currency(obj),
        "occurred_at": _EPOCH + dt.timedelta(seconds=header.created),
        "livemode": _livemode(event),
    }
    if event_type in _PAYMENT_INTENT_STATUS:
        return PaymentUpdate(
            reference=check_identifier(obj.get("id"), "data.object.id"),
            status=_PAYMENT_INTENT_STATUS[event_type],
            amount=_amount(obj, "amount"),
            amount_received=_amount(obj, "amount_received"),
            **common,
        )
    if event_type in (CHARGE_SUCCEEDED, CHARGE_REFUNDED):
        return _charge(obj, event_type, common)
    # checkout.session.completed
    intent = _id_of(obj.get("payment_intent"))
    if intent is None or obj.get("mode", "payment") != "payment":
        return None
    paid = obj.get("payment_status") == "paid"
    return PaymentUpdate(
        reference=check_identifier(intent, "data.object.payment_intent"),
        status=PaymentStatus.SUCCEEDED if paid else PaymentStatus.PENDING,
        amount=_amount(obj, "amount_total"),
        amount_received=_amount(obj, "amount_total") if paid else None,
        amounts_fill_only=True,  # the PaymentIntent's own events carry the amounts
        **common,
    )

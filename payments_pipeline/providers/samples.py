"""Event bodies written by us to the shapes the providers send: the demo, the tests, the soak.

One builder per provider, so every door that needs a Stripe event or a Monetbil notification of its
own makes it the same way. The shapes follow what the real ones show (Stripe's API reference for
the event envelope, its PaymentIntent, Charge and Checkout Session objects; Monetbil's PHP SDK for
the notification fields and `monetbil.sign_fields` for the sign); only the fields our handlers
read, plus whatever `object_fields` / `fields` add.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"


class _StripeObject(NamedTuple):
    """How `stripe_object` builds the `data.object` of one event type."""

    id_prefix: str  # put before the reference to make the object's id
    kind: str  # its `object` field; anything but a PaymentIntent names its `payment_intent`
    amount_fields: tuple[str, ...]  # the fields that carry the amount, in order
    fixed: Mapping[str, Any]  # the fields with the same value in every sample, after the amount


_PAYMENT_INTENT = _StripeObject("", "payment_intent", ("amount",), {})
_STRIPE_OBJECTS = {
    # a success received the whole amount (no manual capture), like the recorded ones
    PAYMENT_INTENT_SUCCEEDED: _StripeObject(
        "", "payment_intent", ("amount", "amount_received"), {}
    ),
    "charge.succeeded": _StripeObject(
        "ch_", "charge", ("amount", "amount_captured"), {"captured": True, "amount_refunded": 0}
    ),
    "charge.refunded": _StripeObject(
        "ch_", "charge", ("amount", "amount_captured", "amount_refunded"), {"refunded": True}
    ),
    "checkout.session.completed": _StripeObject(
        "cs_", "checkout.session", ("amount_total",), {"payment_status": "paid"}
    ),
}


def stripe_object(
    event_type: str, *, reference: str, amount: int, currency: str, object_id: str | None = None
) -> dict[str, Any]:
    """`data.object` of a Stripe event of `event_type` for the PaymentIntent `reference`."""
    shape = _STRIPE_OBJECTS.get(event_type, _PAYMENT_INTENT)
    obj: dict[str, Any] = {"id": object_id or f"{shape.id_prefix}{reference}", "object": shape.kind}
    if shape.kind != "payment_intent":
        obj["payment_intent"] = reference
    obj.update(dict.fromkeys(shape.amount_fields, amount))
    obj.update(shape.fixed)
    obj["currency"] = currency
    return obj


def stripe_event(
    event_id: str,
    event_type: str = PAYMENT_INTENT_SUCCEEDED,
    *,
    reference: str = "pi_1",
    amount: int = 1000,
    currency: str = "eur",
    created: int | None = None,
    object_id: str | None = None,
    object_fields: Mapping[str, Any] | None = None,
    livemode: bool = False,
    **envelope: Any,
) -> str:
    """A Stripe event body as Stripe sends it (compact JSON); `created` defaults to now."""
    obj = stripe_object(
        event_type, reference=reference, amount=amount, currency=currency, object_id=object_id
    )
    event = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(time.time()) if created is None else created,
        "livemode": livemode,
        "data": {"object": obj | dict(object_fields or {})},
        **envelope,
    }
    return json.dumps(event, separators=(",", ":"))


def monetbil_fields(
    transaction_id: str,
    status: str = "1",
    *,
    payment_ref: str = "order-1",
    amount: str = "500",
    currency: str = "XAF",
    service: str = "svc",
    **extra: str,
) -> dict[str, str]:
    """The fields of a Monetbil notification (unsigned: `monetbil.sign_fields` adds `sign`)."""
    return {
        "service": service,
        "transaction_id": transaction_id,
        "status": status,
        "amount": amount,
        "currency": currency,
        "payment_ref": payment_ref,
        **extra,
    }


def monetbil_notification(transaction_id: str, status: str = "1", **fields: str) -> str:
    """A Monetbil notification body (form-encoded), as stored; `sign` only if given in `fields`."""
    return urlencode(monetbil_fields(transaction_id, status, **fields))

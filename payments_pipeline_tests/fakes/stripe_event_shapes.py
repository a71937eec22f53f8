"""Stripe events as `GET /v1/events` returns them (API 2024-06-20), for our fake Events API.

The envelope and the fields our handlers read come from `samples.stripe_event` (the project's
one payload builder); the rest of each object is filled in to the real shapes: the recorded events
under shared/fixtures/real-payloads (stripe-ruby-mock `payment_intent.succeeded`,
`payment_intent.payment_failed`, `charge.refunded`) and stripe-mock's 2024-era objects
(`fixtures3.json`: a PaymentIntent carries `latest_charge` as an id and no `charges` list, a
Charge no `refunds` list). Values already set (by `samples` or `object_fields`) are never
replaced.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Mapping
from typing import Any

from payments_pipeline.providers import samples

API_VERSION = "2024-06-20"
_ALPHABET = string.ascii_letters + string.digits
_RANDOM = random.Random()  # ids need no secrecy, and 10,000 events need speed
# the id prefix of `data.object` for the types that are not about a PaymentIntent itself
_OBJECT_PREFIX = {"charge": "ch_", "checkout.session": "cs_test_"}


def stripe_id(prefix: str) -> str:
    """An id shaped like Stripe's: the prefix and 24 letters and digits."""
    return prefix + "".join(_RANDOM.choices(_ALPHABET, k=24))


def _payment_intent(obj: dict[str, Any], event_type: str, created: int) -> dict[str, Any]:
    pi, charge = obj["id"], "ch_" + obj["id"].removeprefix("pi_")
    failed = event_type == "payment_intent.payment_failed"
    canceled = event_type == "payment_intent.canceled"
    succeeded = event_type == samples.PAYMENT_INTENT_SUCCEEDED
    return {
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": obj["amount"] if succeeded else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": created if canceled else None,
        "cancellation_reason": "requested_by_customer" if canceled else None,
        "capture_method": "automatic",
        "client_secret": f"{pi}_secret_{stripe_id('')[:25]}",
        "confirmation_method": "automatic",
        "excluded_payment_method_types": None,
        "created": created,
        "customer": None,
        "description": None,
        "invoice": None,
        "last_payment_error": _card_declined(charge) if failed else None,
        "latest_charge": None if canceled else charge,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None if failed or canceled else "pm_" + pi.removeprefix("pi_"),
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": {
            samples.PAYMENT_INTENT_SUCCEEDED: "succeeded",
            "payment_intent.payment_failed": "requires_payment_method",
            "payment_intent.canceled": "canceled",
        }.get(event_type, "requires_payment_method"),
        "transfer_data": None,
        "transfer_group": None,
    }


def _card_declined(charge: str) -> dict[str, Any]:
    return {
        "charge": charge,
        "code": "card_declined",
        "decline_code": "generic_decline",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card was declined.",
        "type": "card_error",
    }


def _charge(obj: dict[str, Any], created: int) -> dict[str, Any]:
    amount = obj["amount"]
    return {
        "amount_captured": amount,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": stripe_id("txn_"),
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "calculated_statement_descriptor": "EXAMPLECOMPANY",
        "captured": True,
        "created": created,
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_method": stripe_id("pm_"),
        "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}, "type": "card"},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{obj['id']}",
        "refunded": False,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def _checkout_session(obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "amount_subtotal": obj.get("amount_total"),
        "cancel_url": None,
        "client_reference_id": None,
        "created": created,
        "customer": None,
        "customer_details": None,
        "expires_at": created + 86_400,
        "metadata": {},
        "mode": "payment",
        "payment_method_types": ["card"],
        "status": "complete",
        "success_url": "https://example.com/success",
        "url": None,
    }


def event(
    event_type: str = samples.PAYMENT_INTENT_SUCCEEDED,
    *,
    created: int,
    event_id: str | None = None,
    reference: str | None = None,
    object_id: str | None = None,
    amount: int = 1000,
    currency: str = "eur",
    livemode: bool = False,
    object_fields: Mapping[str, Any] | None = None,
    api_version: str = API_VERSION,
) -> dict[str, Any]:
    """One event as the Events API lists it; `pending_webhooks` is the server's to set."""
    reference = reference or stripe_id("pi_")
    prefix = next((p for kind, p in _OBJECT_PREFIX.items() if event_type.startswith(kind)), None)
    if object_id is None and prefix is not None:
        object_id = stripe_id(prefix)
    body = samples.stripe_event(
        event_id or stripe_id("evt_"),
        event_type,
        reference=reference,
        amount=amount,
        currency=currency,
        created=created,
        object_id=object_id,
        livemode=livemode,
        object_fields=object_fields,
    )
    built = json.loads(body)
    obj: dict[str, Any] = built["data"]["object"]
    if obj["object"] == "payment_intent":
        extra = _payment_intent(obj, event_type, created)
    elif obj["object"] == "charge":
        extra = _charge(obj, created)
    elif obj["object"] == "checkout.session":
        extra = _checkout_session(obj, created)
    else:
        extra = {"created": created, "metadata": {}}
    obj.update({k: v for k, v in extra.items() if k not in obj})
    obj["livemode"] = livemode
    return {
        "id": built["id"],
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": {"object": dict(sorted(obj.items()))},
        "livemode": livemode,
        "pending_webhooks": 0,
        "request": {"id": stripe_id("req_")[:18], "idempotency_key": None},
        "type": event_type,
    }

"""From an HTTP request to a verified `Delivery`: the provider-specific half of the receiver.

Each reader refuses (`Refusal`) before anything is stored: wrong media type (415), body over the
limit (413), signature that does not verify (400), body that cannot be a delivery (400). What it
returns is exactly what `gate.receive` records: the provider's key, the event type and the payload
text a signature can be checked against again later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
from starlette.requests import Request

from payments_pipeline.config import Settings
from payments_pipeline.models import Provider
from payments_pipeline.providers import monetbil, monetbil_check, stripe
from payments_pipeline.providers.errors import PayloadError, SignatureError

from .body import FORM, JSON, read_body, require_media_type
from .errors import ErrorCode, Refusal

STRIPE_SIGNATURE_HEADER = "stripe-signature"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified delivery, ready for the gate."""

    provider: Provider
    provider_event_id: str
    event_type: str
    payload: str
    reference: str | None = None  # Monetbil's payment_ref, for the checkPayment comparison
    # Monetbil's verified fields, for the checkPayment comparison; empty for Stripe.
    fields: Mapping[str, str] = field(default_factory=dict)


def _malformed(detail: str) -> Refusal:
    return Refusal(400, ErrorCode.MALFORMED_PAYLOAD, detail)


def _storable(text: str) -> str:
    # PostgreSQL text refuses NUL; no JSON document or form a provider sends contains a raw one.
    if "\x00" in text:
        raise _malformed("body contains a NUL character")
    return text


async def read_stripe(request: Request, settings: Settings) -> Delivery:
    """Stripe: JSON body, `Stripe-Signature` over the raw bytes (any configured secret, 300 s)."""
    require_media_type(request, JSON)
    body = await read_body(request, settings.max_body_bytes)
    try:
        stripe.verify_signature(
            body, request.headers.get(STRIPE_SIGNATURE_HEADER), settings.stripe_webhook_secrets
        )
    except SignatureError as exc:
        raise Refusal(400, ErrorCode.INVALID_SIGNATURE, str(exc)) from None
    text = _storable(body.decode("utf-8"))  # verify_signature refused anything but UTF-8
    try:
        header = stripe.parse_event(text)
    except PayloadError as exc:
        raise _malformed(str(exc)) from None
    return Delivery(Provider.STRIPE, header.id, header.type, text)


async def read_monetbil(request: Request, settings: Settings) -> Delivery:
    """Monetbil: the signed fields of a form body, or of the query string when there is no body.

    A notification must name its payment in `payment_ref` (`monetbil.reference_for`): one without
    it is refused here, before anything is stored, since it could never move a payment.

    Like Monetbil's PHP handlers, a form body is read alone (`$_POST`: a query string beside it is
    not part of the signed fields), and a request without a body (GET, or an empty POST) is read
    from its query string (`parse_str`). The stored payload is the raw form body, or for the
    query-string variant its canonical form, so either parses back to the same signed fields.
    """
    body = await read_body(request, settings.max_body_bytes) if request.method == "POST" else b""
    if body:
        require_media_type(request, FORM)
        source = body
    else:
        source = request.scope.get("query_string", b"")
        if not source:
            raise _malformed("no notification fields in the body or the query string")
    try:
        fields = monetbil.parse_form(source)
        # Names before the sign: a notification with a name Monetbil never sends is refused as
        # such (and logged by that name), whether or not its sign also fails.
        monetbil.check_field_names(fields)
        monetbil.verify_signature(fields, settings.monetbil_service_secret)
        event_type = monetbil.event_type_for(fields)
        event_id = monetbil.event_id_for(fields)
        reference = monetbil.reference_for(fields)
    except SignatureError as exc:
        raise Refusal(400, ErrorCode.INVALID_SIGNATURE, str(exc)) from None
    except monetbil.UnknownFieldError as exc:
        raise Refusal(
            400,
            ErrorCode.UNKNOWN_FIELD,
            str(exc),
            log_detail=f"{exc}: {monetbil.loggable_name(exc.name)}",
        ) from None
    except monetbil.DuplicateFieldError as exc:
        raise Refusal(400, ErrorCode.DUPLICATE_FIELD, str(exc)) from None
    except PayloadError as exc:
        raise _malformed(str(exc)) from None
    payload = source.decode("utf-8") if body else monetbil.canonical_payload(fields)
    return Delivery(Provider.MONETBIL, event_id, event_type, _storable(payload), reference, fields)


async def confirm_monetbil(delivery: Delivery, settings: Settings) -> None:
    """Monetbil's own handler confirms with `checkPayment`; we do it for success notifications
    when `MONETBIL_CHECK_PAYMENT_URL` is set. A failure or a cancellation moves no money, so only a
    success needs the second opinion; without the URL nothing leaves the machine.

    Refused (409) unless the answer reports a success, names no other payment_ref, and agrees
    with the notification on every compared field it carries (`PaymentCheck.disagreements`:
    status, amount, fee, revenue, currency, the payer's number)."""
    url = settings.monetbil_check_payment_url
    if not url or delivery.provider is not Provider.MONETBIL:
        return
    transaction_id = delivery.fields.get("transaction_id")
    if delivery.event_type != monetbil.SUCCESS or transaction_id is None:
        return
    try:
        check = await anyio.to_thread.run_sync(
            lambda: monetbil_check.check_payment(
                url,
                transaction_id,
                timeout=settings.monetbil_check_payment_timeout_seconds,
            ),
            abandon_on_cancel=True,
        )
    except monetbil_check.ConfirmationUnavailable as exc:
        raise Refusal(
            503,
            ErrorCode.CONFIRMATION_UNAVAILABLE,
            "checkPayment gave no usable answer; retry later",
            log_detail=str(exc),
        ) from None
    if not check.confirms_success:
        raise Refusal(
            409,
            ErrorCode.PAYMENT_NOT_CONFIRMED,
            "checkPayment does not report this transaction as a success",
            log_detail=f"checkPayment reports status {check.status or 'unknown'}",
        )
    if delivery.reference is not None and check.contradicts(delivery.reference):
        raise Refusal(
            409,
            ErrorCode.PAYMENT_NOT_CONFIRMED,
            "checkPayment names another payment_ref for this transaction",
        )
    disagreeing = check.disagreements(delivery.fields)
    if disagreeing:  # names from monetbil_check's fixed list, never a value
        raise Refusal(
            409,
            ErrorCode.PAYMENT_NOT_CONFIRMED,
            "the notification disagrees with checkPayment on " + ", ".join(disagreeing),
        )

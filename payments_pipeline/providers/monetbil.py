"""Monetbil payment notifications: parse the form, verify `sign`, map the status to a payment.

The sign rule, as checked in Monetbil's own PHP SDK, github.com/Monetbil/monetbil-php, file
`monetbil.php` (commit 6d45984, the latest), and identically in the WooCommerce plugin
Monetbil/monetbil-wordpress-woocommerce (`monetbil-woocommerce-gateway.php`, before its removal):

    public static function sign($service_secret, $params) {
        ksort($params);
        $signature = md5($service_secret . implode('', $params));
        return $signature;
    }
    public static function checkSign($service_secret, $params) {
        if (!array_key_exists('sign', $params)) { return false; }
        $sign = $params['sign']; unset($params['sign']);
        return ($sign == Monetbil::sign($service_secret, $params));
    }

and `notify.php` calls `checkSign($service_secret, $_POST)` (`return.php`: the query string read
with `parse_str`). So:

- the values are the DECODED (raw) values, as PHP's `$_POST`/`parse_str` hand them over
  (`%21` -> `!`, `+` -> space), concatenated with no separator and no keys;
- every field except `sign` takes part, blank ones included (they add nothing to the string);
- fields are sorted by name with `ksort` (default flags): for non-numeric string keys that is
  `strcmp`, the byte order of the names. Python's `sorted` on `str` is code-point order, which is
  the same as UTF-8 byte order; Monetbil's field names are never numeric, so PHP's numeric-key
  ordering never applies;
- the digest is lowercase hex md5 of the UTF-8 bytes of `service_secret + values`.

We compare in constant time and exactly; PHP's loose `==` would also accept some numeric-looking
("0e123...") mismatches, which we deliberately do not. Repeated field names (PHP keeps the last)
are refused: which copy was signed is ambiguous.

Status codes (the SDK's constants): 1 success, 0 failed, -1 cancelled; test mode 7, 8, 9.

The payment a notification moves is named by one field only, `payment_ref` (the merchant's
reference, sent to Monetbil when the payment was started and echoed back). A notification without
it is refused. There is deliberately no fallback to `item_ref` or `transaction_id`: the sign covers
values, not names, so a copy of a signed notification with `payment_ref` renamed still verifies,
and a fallback would then apply it to whatever payment `item_ref` names. What the sign still cannot
rule out (a rename that keeps the sorted order of the values and moves another value into
`payment_ref`) is what the checkPayment confirmation is for (`monetbil_check`, docs/receiver.md).

Field names: the receiver accepts only the names Monetbil's notifications are documented to carry
(`NOTIFICATION_FIELDS`, `check_field_names`), so a copy cannot park a value under a name of its
own choosing (`payment_ref` -> `payment_ref2`); a name given twice is refused as well
(`DuplicateFieldError`). This narrows the re-labellings the sign cannot see to moves between
documented names that keep the concatenation of the values in name order (docs/receiver.md
gives examples), which only checkPayment can catch. `parse_form` itself stays a plain form
decoder: processing re-reads stored payloads with it, and the name check belongs to the door
that lets a notification in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from payments_pipeline.models import PaymentStatus, PaymentUpdate, Provider
from payments_pipeline.providers.currency import to_minor_units
from payments_pipeline.providers.errors import PayloadError, SignatureError, check_identifier

SIGN_FIELD = "sign"
REFERENCE_FIELD = "payment_ref"
DEFAULT_CURRENCY = "XAF"
MAX_FIELDS = 200

# Every field name a Monetbil notification (POST body or return-redirect query string) carries,
# and no other. Read from:
# - Monetbil/monetbil-php, `notify.php` at 0c016320222ae00136947892e7c4193fe7d5785b (unchanged
#   at the repository's latest commit, 6d4598477a349b60ddddf62a4c07d04d2e50ed72): Monetbil's
#   notification handler verifies `sign` over `$_POST` and reads service, transaction_id,
#   transaction_uuid, msisdn, amount, fee, status, message, country_name, country_iso,
#   country_code, mccmnc, mobile_operator_name, currency, user, item_ref, payment_ref,
#   first_name, last_name, email;
# - the same repository's `return.php` at d8de74df471db200a4d52b7cedfad08f82017f10: the return
#   redirect's query string (checkSign over `parse_str`) also carries `phone`;
# - Rushclin/monetbil-api, `src/modules/webhook/dto/webhook.dto.ts` at
#   07d073e94fdb3cf975d34da9ed22efb4cf6f2a37 (a third-party integration of the current API, not
#   Monetbil's own code): the newer notification also carries phone, revenue, operator,
#   operator_code. Refusing a field Monetbil really sends would refuse every notification, so
#   these are in;
# - Monetbil/monetbil-prestashop-1.6 and -1.7 (`controllers/front/notify.php` at
#   123aa37057843ff7eb508948965de0cca7a11420 and 539d06264d963132abf3c28b3b051ff3854b91ed) and
#   Monetbil/monetbil-wordpress-woocommerce (`monetbil-woocommerce-gateway.php` at
#   3c447bd862bc873810ab4670f53d66ca550ce200) read a subset of these (item_ref, transaction_id).
NOTIFICATION_FIELDS: frozenset[str] = frozenset(
    {
        "service",
        "transaction_id",
        "transaction_uuid",
        "msisdn",
        "phone",
        "amount",
        "fee",
        "revenue",
        "status",
        "message",
        "country_name",
        "country_iso",
        "country_code",
        "mccmnc",
        "mobile_operator_name",
        "operator",
        "operator_code",
        "currency",
        "user",
        "item_ref",
        "payment_ref",
        "first_name",
        "last_name",
        "email",
        SIGN_FIELD,
    }
)

SUCCESS = "payment.success"
FAILED = "payment.failed"
CANCELLED = "payment.cancelled"

_EVENT_TYPE_BY_STATUS: dict[str, str] = {
    "1": SUCCESS,
    "0": FAILED,
    "-1": CANCELLED,
    "7": SUCCESS,  # test mode
    "8": FAILED,  # test mode
    "9": CANCELLED,  # test mode
}
TEST_MODE_STATUSES = frozenset({"7", "8", "9"})
_PAYMENT_STATUS: dict[str, PaymentStatus] = {
    SUCCESS: PaymentStatus.SUCCEEDED,
    FAILED: PaymentStatus.FAILED,
    CANCELLED: PaymentStatus.CANCELLED,
}
EVENT_TYPES: frozenset[str] = frozenset(_PAYMENT_STATUS)


class UnknownFieldError(PayloadError):
    """A field name outside `NOTIFICATION_FIELDS`. `name` is kept for the log line only (when it
    is a plain identifier: `loggable_name`), never for a response."""

    def __init__(self, name: str) -> None:
        super().__init__("a field name is not one of Monetbil's notification fields")
        self.name = name


class DuplicateFieldError(PayloadError):
    """A field name given twice: which copy was signed is ambiguous (PHP keeps the last)."""


_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,40}")


def loggable_name(name: str) -> str:
    """`name` if it is a short plain identifier (what a new Monetbil field would look like),
    else a placeholder: a field name is the sender's text and goes to a log line only so."""
    return name if _IDENTIFIER.fullmatch(name) else "(not an identifier)"


def check_field_names(fields: Mapping[str, str]) -> None:
    """Raise `UnknownFieldError` for the first name (in sorted order) Monetbil does not send.

    The sign covers values, not names, so a name of the sender's own choosing is how a signed
    notification is re-labelled: refusing every name outside the documented set leaves only moves
    between Monetbil's own names (module docstring).
    """
    for name in sorted(fields):
        if name not in NOTIFICATION_FIELDS:
            raise UnknownFieldError(name)


_CURRENCY = re.compile(r"[A-Z]{3}")


def compute_sign(fields: Mapping[str, str], secret: str) -> str:
    """Monetbil's `sign` for `fields`: md5(secret + every value but `sign`'s, sorted by name)."""
    values = "".join(value for name, value in sorted(fields.items()) if name != SIGN_FIELD)
    return hashlib.md5((secret + values).encode("utf-8")).hexdigest()


def verify_signature(fields: Mapping[str, str], secret: str | None) -> None:
    """Raise `SignatureError` unless `fields["sign"]` is Monetbil's sign of the other fields."""
    if not secret or not secret.strip():
        raise SignatureError("no Monetbil service secret is configured")
    received = fields.get(SIGN_FIELD)
    if not received:
        raise SignatureError("missing sign field")
    try:
        expected = compute_sign(fields, secret)
    except UnicodeError:
        raise SignatureError("fields are not encodable text; the sign cannot match") from None
    # compare_digest on str wants ASCII; a non-ASCII sign can never equal a hex digest.
    if not received.isascii() or not hmac.compare_digest(expected, received):
        raise SignatureError("sign does not match")


def sign_fields(fields: Mapping[str, str], secret: str) -> dict[str, str]:
    """`fields` plus a valid `sign` (any old one replaced): for tests and load generators."""
    signed = {name: value for name, value in fields.items() if name != SIGN_FIELD}
    signed[SIGN_FIELD] = compute_sign(signed, secret)
    return signed


def parse_form(body: str | bytes) -> dict[str, str]:
    """Decode an `application/x-www-form-urlencoded` body (or a query string, the same format).

    Refuses (`PayloadError`) what cannot be a notification: non-UTF-8, an empty body, an empty
    field name, a repeated one (`DuplicateFieldError`), too many fields, a blank or unusable
    `transaction_id`, no `status`. Field names are not checked against Monetbil's set here
    (`check_field_names`).
    """
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("body is not UTF-8") from None
    else:
        text = body
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError("body is not encodable text") from None
    if not text.strip():
        raise PayloadError("body is empty")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except ValueError:  # UnicodeDecodeError of a %-escape, or too many fields
        raise PayloadError("body is not a valid form (bad %-escape or too many fields)") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if not name:
            raise PayloadError("a field has an empty name")
        if name in fields:
            raise DuplicateFieldError("a field name is repeated")
        fields[name] = value
    check_identifier(fields.get("transaction_id"), "transaction_id")
    if not fields.get("status"):
        raise PayloadError("status is missing")
    return fields


def event_type_for(fields: Mapping[str, str]) -> str:
    """`payment.success|failed|cancelled` from Monetbil's status code (live or test mode)."""
    event_type = _EVENT_TYPE_BY_STATUS.get(fields.get("status", ""))
    if event_type is None:
        raise PayloadError("status is not a known Monetbil status code")
    return event_type


def event_id_for(fields: Mapping[str, str]) -> str:
    """The provider event id: `<transaction_id>:<status>`. A later status of one transaction
    (failed, then paid) is a new event; the same status delivered again is a duplicate."""
    transaction = check_identifier(fields.get("transaction_id"), "transaction_id")
    event_type_for(fields)  # a known status code, so the id names a real notification
    return f"{transaction}:{fields['status']}"


def reference_for(fields: Mapping[str, str]) -> str:
    """The merchant's payment reference: `payment_ref`, required (no fallback: see the module
    docstring for why a fallback would let a renamed field move another payment)."""
    return check_identifier(fields.get(REFERENCE_FIELD), REFERENCE_FIELD)


def canonical_payload(fields: Mapping[str, str]) -> str:
    """A deterministic urlencoded form of `fields` (sorted by name, `sign` kept).

    Stored as the event payload when the notification came as a query string, so the stored text
    is independent of parameter order and still re-verifiable: `parse_form` reads it back to the
    same fields.
    """
    return urlencode(sorted(fields.items()))


def payment_update(event_type: str, payload: str) -> PaymentUpdate | None:
    """What a stored Monetbil notification says about its payment; None for unknown types.

    Reference: `payment_ref`, required (`reference_for`). Amount: Monetbil sends major units
    (`10.50` USD, `1 000` XAF), converted to minor units with the currency's ISO 4217 exponent
    (`currency.to_minor_units`); an amount that cannot be read is a `PayloadError`, so the event
    goes `dead` with that reason instead of a payment without an amount. What was paid is the
    amount for a success, nothing otherwise. Statuses 7/8/9 are test mode (`livemode` False).
    Monetbil sends no timestamp, so `occurred_at` is None and ordering falls to the lifecycle
    rules alone.
    """
    status = _PAYMENT_STATUS.get(event_type)
    if status is None:
        return None
    fields = parse_form(payload)
    if event_type_for(fields) != event_type:
        raise PayloadError("event type does not match the payload's status")
    reference = reference_for(fields)
    currency = fields.get("currency", "").strip().upper() or DEFAULT_CURRENCY
    if not _CURRENCY.fullmatch(currency):
        raise PayloadError("currency is not a three-letter code")
    raw_amount = fields.get("amount", "").strip()
    if not raw_amount:
        raise PayloadError("amount is missing")
    amount = to_minor_units(raw_amount, currency)
    return PaymentUpdate(
        provider=Provider.MONETBIL,
        reference=reference,
        status=status,
        amount=amount,
        currency=currency,
        occurred_at=None,
        amount_received=amount if status is PaymentStatus.SUCCEEDED else None,
        livemode=fields["status"] not in TEST_MODE_STATUSES,
    )

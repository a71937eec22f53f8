"""Monetbil's `checkPayment` confirmation: ask Monetbil itself whether a payment succeeded.

The one module under `providers/` that touches the network, and only when
`MONETBIL_CHECK_PAYMENT_URL` is set (Monetbil's is https://api.monetbil.com/payment/v1/checkPayment).
The call is the one Monetbil's PHP SDK makes (`Monetbil::checkPayment`, monetbil.php): a POST of
the form `paymentId=<transaction_id>`, answered with JSON
`{"transaction": {"status": <code>, "testmode": <0|1>, ...}}`. An answer without a `transaction`
object means Monetbil knows no such successful payment (the SDK reads it as status 0, failed).

The SDK reads only `status` and `testmode`. We read more of the transaction object, because the
notification's `sign` does not cover field names: a signed form can be re-labelled (values moved
between Monetbil's own field names, boundaries between neighbouring values shifted) and still
verify (`monetbil` module docstring), and Monetbil's own answer is then the only word on what this
transaction was. `PaymentCheck.disagreements` compares, for every one of these the answer carries:

- `status`: the notification's code must be the answer's (a live `1` is not a test-mode `7`);
- `amount` (and `fee`, `revenue`, compared only when the notification carries them too): as
  numbers, so "500", "500.0", "500.00" and the JSON number 500 agree; spaces as thousands
  separators ("1 000") are dropped; anything else that is not a plain decimal disagrees;
- `currency`: case-insensitive, the notification's missing currency read as XAF (as
  `monetbil.payment_update` reads it);
- the payer's number (`msisdn`, or `phone`, in the answer) against every number the notification
  carries (`msisdn`, `phone`): its digits (`+`, spaces, dashes, dots, parentheses dropped; a
  leading `00` read as the international prefix; any other character and it is no number, so it
  disagrees: that is what merging a neighbouring value into the field looks like). One of the two
  may carry a country code the other lacks (1-3 leading digits, at least 8 left), because a
  return redirect's `phone` is the number as the merchant passed it, often in national form,
  while Monetbil reports the international MSISDN; a number that is not the payer's never
  matches, and moving up to three leading digits into the neighbouring field buys a forger
  nothing;
- `payment_ref` (`contradicts`): exactly.

A notification lacking a field the answer carries (amount, a number) disagrees: Monetbil sends
them, so a copy without them has been tampered with. An answer without a field binds nothing on
it, and docs/receiver.md says what is then left open. A field the answer carries in a form we
cannot read (neither text nor number) is `ConfirmationUnavailable`: nothing was confirmed.

A network error, a timeout, a non-2xx status, a body that is not JSON or an unreadable compared
field is `ConfirmationUnavailable`: nothing was learned, so the receiver answers 503 and Monetbil
retries.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode

from payments_pipeline.providers import monetbil
from payments_pipeline.providers.errors import PayloadError

# checkPayment answers a few hundred bytes; anything far larger is not its answer.
MAX_RESPONSE_BYTES = 64 * 1024


class ConfirmationUnavailable(Exception):
    """checkPayment could not be asked or gave no usable answer; the message names why."""


class CheckPaymentUnreachable(ConfirmationUnavailable):
    """checkPayment could not be asked at all (network, timeout, a non-2xx answer)."""


# A plain decimal: digits, optionally a point and more digits (after spaces are dropped).
_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?")
_THOUSANDS_SEPARATORS = str.maketrans("", "", " \u00a0\u202f")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_PHONE = re.compile(r"\+?[0-9 ().-]{1,40}")
# Shortest national number we accept as "the same number without its country code".
MIN_NATIONAL_DIGITS = 8
MAX_COUNTRY_CODE_DIGITS = 3
# The notification's fields that carry the payer's number.
PHONE_FIELDS = ("msisdn", "phone")


@dataclass(frozen=True, slots=True)
class PaymentCheck:
    """What checkPayment said about one transaction, normalised for comparison."""

    status: str | None  # Monetbil's status code as text; None when it reports no transaction
    testmode: bool
    payment_ref: str | None = None  # the transaction's payment_ref, when the answer names one
    amount: Decimal | None = None
    fee: Decimal | None = None
    revenue: Decimal | None = None
    currency: str | None = None  # upper case
    phone: str | None = None  # digits only (`phone_digits`)

    def contradicts(self, reference: str) -> bool:
        """True when Monetbil names a different payment_ref for this transaction than the
        notification does."""
        return self.payment_ref is not None and self.payment_ref != reference

    def disagreements(self, fields: Mapping[str, str]) -> list[str]:
        """The names of the compared fields (module docstring) on which the notification's
        `fields` disagree with this answer, in a fixed order; empty when they all agree."""
        found: list[str] = []
        if self.status is not None and _status(fields.get("status")) != self.status:
            found.append("status")
        if self.amount is not None and decimal_value(fields.get("amount")) != self.amount:
            found.append("amount")
        for name, expected in (("fee", self.fee), ("revenue", self.revenue)):
            given = fields.get(name, "").strip()
            if expected is not None and given and decimal_value(given) != expected:
                found.append(name)
        if self.currency is not None:
            currency = fields.get("currency", "").strip().upper() or monetbil.DEFAULT_CURRENCY
            if currency != self.currency:
                found.append("currency")
        if self.phone is not None:
            numbers = [fields[n] for n in PHONE_FIELDS if fields.get(n, "").strip()]
            if not numbers or not all(
                same_number(phone_digits(n) or "", self.phone) for n in numbers
            ):
                found.append("phone")
        return found

    @property
    def confirms_success(self) -> bool:
        """Success in live (1) or test mode (7), as Monetbil's own plugins accept either."""
        if self.status is None:
            return False
        try:
            return monetbil.event_type_for({"status": self.status}) == monetbil.SUCCESS
        except PayloadError:  # a status code Monetbil's SDK does not define
            return False


def _status(value: object) -> str | None:
    """A status code as canonical text ("1", "-1"), from a JSON number or text; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or not text.lstrip("-").isascii():
        return None
    return str(int(text))


def decimal_value(value: object) -> Decimal | None:
    """An amount as a number: text ("500", "500.00", "1 000") or a JSON number; None if it is
    neither (so it never equals a real amount)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        value = repr(value)
    if not isinstance(value, str):
        return None
    text = value.strip().translate(_THOUSANDS_SEPARATORS)
    return Decimal(text) if _DECIMAL.fullmatch(text) else None


def phone_digits(value: str) -> str | None:
    """The digits of a phone number, a leading international `00` dropped; None unless `value`
    is written with digits, spaces, `+`, `-`, `.` and parentheses only. Strict on purpose: a
    number with other text in it is not the payer's number with a different spelling, it is
    what a boundary shift makes (a neighbouring value merged in front of the digits)."""
    if not _PHONE.fullmatch(value.strip()):
        return None
    digits = "".join(c for c in value if c in "0123456789")
    digits = digits[2:] if digits.startswith("00") else digits
    return digits or None


def same_number(a: str, b: str) -> bool:
    """Two numbers (digits only) are the payer's same number: equal, or equal once the longer
    loses a 1-3 digit country code and at least `MIN_NATIONAL_DIGITS` digits remain."""
    if not a or not b:
        return False
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return (
        len(short) >= MIN_NATIONAL_DIGITS
        and len(long) - len(short) <= MAX_COUNTRY_CODE_DIGITS
        and long.endswith(short)
    )


def _answer_value(transaction: Mapping[str, object], name: str) -> object:
    """A field of the answer's transaction object: None if absent or null; text or a number
    otherwise; `ConfirmationUnavailable` for anything else (an object, a list, a boolean)."""
    value = transaction.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfirmationUnavailable(f"checkPayment answer has an unreadable {name}")
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _answer_decimal(transaction: Mapping[str, object], name: str) -> Decimal | None:
    value = _answer_value(transaction, name)
    if value is None:
        return None
    number = decimal_value(value)
    if number is None:
        raise ConfirmationUnavailable(f"checkPayment answer has an unreadable {name}")
    return number


def _answer_currency(transaction: Mapping[str, object]) -> str | None:
    value = _answer_value(transaction, "currency")
    if value is None:
        return None
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value.strip()):
        raise ConfirmationUnavailable("checkPayment answer has an unreadable currency")
    return value.strip().upper()


def _answer_phone(transaction: Mapping[str, object]) -> str | None:
    for name in PHONE_FIELDS:
        value = _answer_value(transaction, name)
        if value is None:
            continue
        if isinstance(value, float):
            raise ConfirmationUnavailable(f"checkPayment answer has an unreadable {name}")
        digits = phone_digits(str(value))
        if digits is None:
            raise ConfirmationUnavailable(f"checkPayment answer has an unreadable {name}")
        return digits
    return None


def check_payment(url: str, payment_id: str, *, timeout: float) -> PaymentCheck:
    """POST `paymentId` to `url` and read the transaction's status from the JSON answer."""
    request = urllib.request.Request(
        url,
        data=urlencode({"paymentId": payment_id}).encode("ascii"),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response open
        raise CheckPaymentUnreachable(f"checkPayment answered HTTP {exc.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckPaymentUnreachable(
            f"checkPayment unreachable: {type(reason).__name__}"
        ) from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise ConfirmationUnavailable("checkPayment answer is too large")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise ConfirmationUnavailable("checkPayment answer is not JSON") from None
    transaction = document.get("transaction") if isinstance(document, dict) else None
    if not isinstance(transaction, dict):
        return PaymentCheck(status=None, testmode=False)
    payment_ref = transaction.get(monetbil.REFERENCE_FIELD)
    return PaymentCheck(
        status=_status(transaction.get("status")),
        testmode=str(transaction.get("testmode", "0")).strip() not in {"", "0", "False", "false"},
        payment_ref=payment_ref if isinstance(payment_ref, str) and payment_ref.strip() else None,
        amount=_answer_decimal(transaction, "amount"),
        fee=_answer_decimal(transaction, "fee"),
        revenue=_answer_decimal(transaction, "revenue"),
        currency=_answer_currency(transaction),
        phone=_answer_phone(transaction),
    )

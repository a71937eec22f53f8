"""Monetbil's `checkPayment` confirmation: ask Monetbil itself whether a payment succeeded.

The one module under `providers/` that touches the network, and only when
`MONETBIL_CHECK_PAYMENT_URL` is set (Monetbil's is https://api.monetbil.com/payment/v1/checkPayment).
The call is the one Monetbil's PHP SDK makes (`Monetbil::checkPayment`, monetbil.php): a POST of
the form `paymentId=<transaction_id>`, answered with JSON
`{"transaction": {"status": <code>, "testmode": <0|1>, ...}}`. An answer without a `transaction`
object means Monetbil knows no such successful payment (the SDK reads it as status 0, failed).

The SDK reads only `status` and `testmode`. When the transaction object also names a
`payment_ref`, we read it too: the notification's `sign` does not cover field names, so a signed
form can be re-labelled to name another payment (`monetbil` module docstring), and Monetbil's own
answer is then the only word on which payment this transaction paid. An answer without one binds
nothing, and we say so in docs/receiver.md rather than guess at fields the SDK does not read.

A network error, a timeout, a non-2xx status or a body that is not JSON is
`ConfirmationUnavailable`: nothing was learned, so the receiver answers 503 and Monetbil retries.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode

from payments_pipeline.providers import monetbil
from payments_pipeline.providers.errors import PayloadError

# checkPayment answers a few hundred bytes; anything far larger is not its answer.
MAX_RESPONSE_BYTES = 64 * 1024


class ConfirmationUnavailable(Exception):
    """checkPayment could not be asked or gave no usable answer; the message names why."""


@dataclass(frozen=True, slots=True)
class PaymentCheck:
    status: str | None  # Monetbil's status code as text; None when it reports no transaction
    testmode: bool
    payment_ref: str | None = None  # the transaction's payment_ref, when the answer names one

    def contradicts(self, reference: str) -> bool:
        """True when Monetbil names a different payment_ref for this transaction than the
        notification does."""
        return self.payment_ref is not None and self.payment_ref != reference

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
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).strip()
    return text if text.lstrip("-").isdigit() else None


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
        raise ConfirmationUnavailable(f"checkPayment answered HTTP {exc.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfirmationUnavailable(
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
    )

"""A fake Monetbil checkPayment on 127.0.0.1, shaped like Monetbil's answer.

What the client sends and reads (payments_pipeline/providers/monetbil_check.py, after Monetbil's
PHP SDK): a POST of the form `paymentId=<transaction_id>`, answered with JSON
`{"transaction": {"status": <code>, "testmode": 0|1, "payment_ref", "amount", "currency",
"msisdn", "transaction_id", ...}}`; an answer without `transaction` means Monetbil knows no such
payment.

    with FakeCheckPayment() as fake:
        fake.add("tx_1", 1, payment_ref="order-1", amount=500)   # known transactions
        fake.url                                                 # .../payment/v1/checkPayment

An unknown id is answered `{"message": "payment not found"}`. For fault injection `answer` (a
status and raw body) overrides every answer while it is set, and `delay` holds each answer back;
`asked` records every parsed form, `requests` counts them.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from ._http import QuietHandler, Served, ServerThread

PATH = "/payment/v1/checkPayment"
NOT_FOUND = {"message": "payment not found"}


class FakeCheckPayment(Served):
    def __init__(self) -> None:
        self.answer: tuple[int, bytes] | None = None
        self.delay = 0.0
        self.asked: list[dict[str, list[str]]] = []
        self.transactions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.read_body().decode())
                with fake._lock:
                    fake.asked.append(form)
                time.sleep(fake.delay)
                status, body = fake.answer_for(form.get("paymentId", [""])[0])
                self.send_bytes(status, body)

        self._server = ServerThread(Handler)
        self.url = self._server.base_url + PATH

    @property
    def requests(self) -> int:
        return len(self.asked)

    def add(
        self,
        transaction_id: str,
        status: int,
        *,
        testmode: int = 0,
        payment_ref: str | None = "order-1",
        amount: object = 500,
        currency: str | None = "XAF",
        msisdn: str | None = "237670000000",
        **extra: object,
    ) -> dict[str, Any]:
        """Make `transaction_id` known, answered with this transaction object (None: left out)."""
        fields: dict[str, Any] = {
            "transaction_id": transaction_id,
            "status": status,
            "testmode": testmode,
            "payment_ref": payment_ref,
            "amount": amount,
            "currency": currency,
            "msisdn": msisdn,
            **extra,
        }
        transaction = {k: v for k, v in fields.items() if v is not None}
        with self._lock:
            self.transactions[transaction_id] = transaction
        return transaction

    def transaction(self, status: int, testmode: int = 0, **extra: object) -> None:
        """Answer every request with this one transaction (whatever id is asked)."""
        answer = {"transaction": {"status": status, "testmode": testmode, **extra}}
        self.answer = (200, json.dumps(answer).encode())

    def answer_for(self, payment_id: str) -> tuple[int, bytes]:
        if self.answer is not None:
            return self.answer
        with self._lock:
            transaction = self.transactions.get(payment_id)
        document = NOT_FOUND if transaction is None else {"transaction": transaction}
        return 200, json.dumps(document).encode()

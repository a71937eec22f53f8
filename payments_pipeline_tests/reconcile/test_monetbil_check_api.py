"""The fake Monetbil checkPayment, asked the way the project's client asks it."""

from __future__ import annotations

import pytest

from payments_pipeline.providers.monetbil_check import ConfirmationUnavailable, check_payment

from ..fakes.monetbil_check_api import FakeCheckPayment


def test_a_known_transaction_is_answered_with_its_fields(
    monetbil_check_api: FakeCheckPayment,
) -> None:
    monetbil_check_api.add(
        "tx_paid", 1, payment_ref="order-7", amount="1500", msisdn="237690000001"
    )
    monetbil_check_api.add("tx_test", 7, testmode=1)
    paid = check_payment(monetbil_check_api.url, "tx_paid", timeout=2)
    assert (paid.status, paid.testmode, paid.payment_ref) == ("1", False, "order-7")
    assert (paid.amount, paid.currency, paid.phone) == (1500, "XAF", "237690000001")
    assert paid.confirms_success
    test = check_payment(monetbil_check_api.url, "tx_test", timeout=2)
    assert (test.status, test.testmode, test.confirms_success) == ("7", True, True)
    assert monetbil_check_api.asked == [{"paymentId": ["tx_paid"]}, {"paymentId": ["tx_test"]}]
    assert monetbil_check_api.transactions["tx_paid"]["transaction_id"] == "tx_paid"


def test_an_unknown_transaction_is_answered_without_a_transaction(
    monetbil_check_api: FakeCheckPayment,
) -> None:
    check = check_payment(monetbil_check_api.url, "tx_nobody", timeout=2)
    assert (check.status, check.confirms_success) == (None, False)
    monetbil_check_api.add("tx_failed", 0, amount=None, msisdn=None)
    failed = check_payment(monetbil_check_api.url, "tx_failed", timeout=2)
    assert (failed.status, failed.amount, failed.phone) == ("0", None, None)
    assert monetbil_check_api.requests == 2


def test_a_forced_answer_overrides_and_a_slow_one_times_out(
    monetbil_check_api: FakeCheckPayment,
) -> None:
    monetbil_check_api.add("tx_1", 1)
    monetbil_check_api.answer = (500, b"oops")
    with pytest.raises(ConfirmationUnavailable, match="HTTP 500"):
        check_payment(monetbil_check_api.url, "tx_1", timeout=2)
    monetbil_check_api.answer, monetbil_check_api.delay = None, 0.5
    with pytest.raises(ConfirmationUnavailable, match="unreachable"):
        check_payment(monetbil_check_api.url, "tx_1", timeout=0.2)
    monetbil_check_api.delay = 0.0
    assert check_payment(monetbil_check_api.url, "tx_1", timeout=2).status == "1"

"""Monetbil's checkPayment confirmation, against a fake checkPayment on 127.0.0.1.

Off unless `MONETBIL_CHECK_PAYMENT_URL` is set; when set, a success notification is only recorded
once Monetbil's API confirms it, and a confirmation that cannot be had is a 503 (retry later).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from payments_pipeline.providers import monetbil
from payments_pipeline.providers.monetbil_check import (
    ConfirmationUnavailable,
    check_payment,
    decimal_value,
    phone_digits,
    same_number,
)

from ..fakes.monetbil_check_api import FakeCheckPayment
from .conftest import ClientFactory
from .support import (
    FORM_HEADERS,
    MONETBIL_SECRET,
    count_events,
    form,
    free_port,
    monetbil_fields,
)

URL = "/webhooks/monetbil"


@pytest.fixture
def fake_check() -> Iterator[FakeCheckPayment]:
    with FakeCheckPayment() as fake:
        yield fake


# Posts a notification (`tx`, `status`) that checkPayment answers: a success with these fields.
Answered = Callable[..., Any]


@pytest.fixture
def answered(make_client: ClientFactory, fake_check: FakeCheckPayment) -> Answered:
    def post(answer: dict[str, object], tx: str, status: str = "1") -> Any:
        fake_check.transaction(1, **answer)  # type: ignore[arg-type]
        return _post(make_client, fake_check, tx, status=status)

    return post


def _post(
    make_client: ClientFactory,
    fake: FakeCheckPayment,
    tx: str,
    status: str = "1",
    fields: dict[str, str] | None = None,
) -> Any:
    client = make_client(
        monetbil_check_payment_url=fake.url, monetbil_check_payment_timeout_seconds=1
    )
    fields = fields or monetbil_fields(tx, status=status)
    return client.post(URL, content=form(fields), headers=FORM_HEADERS)


@pytest.mark.parametrize("api_status", [1, 7])
def test_confirmed_success_is_accepted(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment, api_status: int
) -> None:
    fake_check.transaction(api_status, testmode=int(api_status == 7))
    response = _post(make_client, fake_check, "tx_confirmed", status=str(api_status))
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    assert fake_check.asked == [{"paymentId": ["tx_confirmed"]}]
    assert count_events(engine) == 1


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps({"transaction": {"status": 0, "testmode": 0}}).encode(),
        json.dumps({"transaction": {"status": -1}}).encode(),
        json.dumps({"message": "payment not found"}).encode(),
        json.dumps({"transaction": {"status": "bogus"}}).encode(),
    ],
    ids=["failed", "cancelled", "unknown payment", "unreadable status"],
)
def test_success_the_api_does_not_confirm_is_refused_unstored(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment, answer: bytes
) -> None:
    fake_check.answer = (200, answer)
    response = _post(make_client, fake_check, "tx_unconfirmed")
    assert response.status_code == 409
    assert response.json()["error"] == "payment_not_confirmed"
    assert count_events(engine) == 0


@pytest.mark.parametrize(
    ("answer", "delay"),
    [((500, b"oops"), 0.0), ((200, b"<html>"), 0.0), ((200, b"{}"), 1.5)],
    ids=["http 500", "not JSON", "timeout"],
)
def test_unavailable_confirmation_is_503_so_monetbil_retries(
    make_client: ClientFactory,
    engine: Engine,
    fake_check: FakeCheckPayment,
    answer: tuple[int, bytes],
    delay: float,
) -> None:
    fake_check.answer, fake_check.delay = answer, delay
    response = _post(make_client, fake_check, "tx_later")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"] == "confirmation_unavailable"
    assert count_events(engine) == 0


def test_unreachable_api_is_503(make_client: ClientFactory, engine: Engine) -> None:
    url = f"http://127.0.0.1:{free_port()}/checkPayment"  # nothing listens there
    client = make_client(monetbil_check_payment_url=url)
    response = client.post(URL, content=form(monetbil_fields("tx_down")), headers=FORM_HEADERS)
    assert response.status_code == 503
    assert count_events(engine) == 0


@pytest.mark.parametrize("status", ["0", "-1"])
def test_failures_and_cancellations_need_no_confirmation(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment, status: str
) -> None:
    fake_check.answer = (500, b"must not be asked")
    response = _post(make_client, fake_check, f"tx_no_money_{status}", status=status)
    assert response.status_code == 200
    assert fake_check.asked == []


def test_check_payment_reads_status_and_testmode(fake_check: FakeCheckPayment) -> None:
    fake_check.transaction(7, testmode=1)
    check = check_payment(fake_check.url, "tx_1", timeout=2)
    assert (check.status, check.testmode, check.confirms_success) == ("7", True, True)
    fake_check.answer = (404, b"")
    with pytest.raises(ConfirmationUnavailable, match="HTTP 404"):
        check_payment(fake_check.url, "tx_1", timeout=2)


def test_check_payment_naming_the_same_payment_ref_is_accepted(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment
) -> None:
    fake_check.transaction(1, payment_ref="order-tx_same")
    response = _post(make_client, fake_check, "tx_same")
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    assert count_events(engine) == 1


def test_check_payment_naming_another_payment_ref_is_refused(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment
) -> None:
    # The rename the sign and the field names cannot see (msisdn -> payment_ref, payment_ref ->
    # phone: two of Monetbil's own names, and msisdn < payment_ref < phone keeps the values'
    # order): the sign verifies and the form names the payer's number as the payment. Monetbil's
    # own answer names the real payment_ref, so the delivery is refused unstored.
    signed = monetbil_fields("tx_shifted")
    shifted = {k: v for k, v in signed.items() if k not in {"msisdn", "payment_ref"}}
    shifted |= {"payment_ref": signed["msisdn"], "phone": signed["payment_ref"]}
    monetbil.verify_signature(shifted, MONETBIL_SECRET)
    monetbil.check_field_names(shifted)
    fake_check.transaction(1, payment_ref=signed["payment_ref"])
    response = _post(make_client, fake_check, "tx_shifted", fields=shifted)
    assert response.status_code == 409
    assert response.json()["error"] == "payment_not_confirmed"
    assert "another payment_ref" in response.json()["detail"]
    assert count_events(engine) == 0


def test_check_payment_reads_payment_ref_only_when_it_is_text(fake_check: FakeCheckPayment) -> None:
    for value, expected in [("order-1", "order-1"), ("  ", None), (42, None), (None, None)]:
        fake_check.transaction(1, payment_ref=value)
        check = check_payment(fake_check.url, "tx_1", timeout=2)
        assert check.payment_ref == expected
        assert check.contradicts("order-2") is (expected is not None)
    fake_check.transaction(1)
    assert check_payment(fake_check.url, "tx_1", timeout=2).payment_ref is None


# --- the answer's amount, currency, number and status against the notification's --------------
# monetbil_fields: amount "500", currency "XAF", msisdn "237670000000", status "1", fee "10".


@pytest.mark.parametrize(
    "answer",
    [
        {"amount": 500, "currency": "XAF", "msisdn": "237670000000"},
        {"amount": "500.00", "currency": "xaf", "msisdn": "+237 670 000 000"},
        {"amount": 500.0, "msisdn": 237670000000},
        {"amount": "500.0", "msisdn": "00237670000000"},
        {"msisdn": "670000000"},  # the national form, without the country code
        {"fee": "10.00", "revenue": "490"},  # revenue: the notification carries none
        {},
    ],
    ids=["numbers", "other spellings", "JSON numbers", "00 prefix", "national", "fee", "none"],
)
def test_an_answer_that_agrees_is_accepted(
    answered: Answered, engine: Engine, answer: dict[str, object]
) -> None:
    response = answered(answer, "tx_agrees")
    assert response.status_code == 200, response.text
    assert count_events(engine) == 1


@pytest.mark.parametrize(
    ("answer", "status", "field"),
    [
        ({"amount": 5000}, "1", "amount"),
        ({"amount": "50"}, "1", "amount"),
        ({"currency": "EUR"}, "1", "currency"),
        ({"msisdn": "237699999999"}, "1", "phone"),
        ({"msisdn": "70000000"}, "1", "phone"),  # a suffix, but not the number minus a code
        ({"phone": "237699999999"}, "1", "phone"),
        ({"fee": 20}, "1", "fee"),
        ({}, "7", "status"),  # a live success answered for a test-mode notification
    ],
    ids=["amount", "amount short", "currency", "msisdn", "suffix", "phone", "fee", "status"],
)
def test_an_answer_that_disagrees_is_refused_unstored(
    answered: Answered, engine: Engine, answer: dict[str, object], status: str, field: str
) -> None:
    response = answered(answer, "tx_disagrees", status)
    assert response.status_code == 409, response.text
    assert response.json() == {
        "error": "payment_not_confirmed",
        "detail": f"the notification disagrees with checkPayment on {field}",
    }
    assert count_events(engine) == 0


def test_a_notification_missing_what_the_answer_carries_is_refused(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment
) -> None:
    fake_check.transaction(1, amount=500, msisdn="237670000000")
    signed = monetbil_fields("tx_missing")
    bare = monetbil.sign_fields(
        {k: v for k, v in signed.items() if k not in {"amount", "msisdn"}}, MONETBIL_SECRET
    )
    response = _post(make_client, fake_check, "tx_missing", fields=bare)
    assert response.status_code == 409
    assert response.json()["detail"].endswith("on amount, phone")
    assert count_events(engine) == 0


def test_a_boundary_shift_onto_documented_names_is_caught_by_the_number(
    make_client: ClientFactory, engine: Engine, fake_check: FakeCheckPayment
) -> None:
    # What the field names cannot stop: with the return redirect's fields (… last_name,
    # payment_ref, phone …), payment_ref := last_name and phone := payment_ref + phone keep the
    # concatenation of the values, so the sign verifies and every name is Monetbil's. An answer
    # that names no payment_ref still carries the payer's number, and the shifted phone is not it.
    fields = monetbil_fields("tx_merge", last_name="order-victim", phone="237670000000")
    fields = {k: v for k, v in fields.items() if k not in {"msisdn", "message"}}
    genuine = monetbil.sign_fields(fields, MONETBIL_SECRET)
    shifted = {k: v for k, v in genuine.items() if k not in {"last_name", "payment_ref", "phone"}}
    shifted |= {
        "last_name": "",
        "payment_ref": genuine["last_name"],
        "phone": genuine["payment_ref"] + genuine["phone"],
    }
    monetbil.verify_signature(shifted, MONETBIL_SECRET)
    monetbil.check_field_names(shifted)
    fake_check.transaction(1, amount="500", currency="XAF", msisdn="237670000000")
    response = _post(make_client, fake_check, "tx_merge", fields=shifted)
    assert response.status_code == 409
    assert response.json()["detail"] == "the notification disagrees with checkPayment on phone"
    assert count_events(engine) == 0
    assert _post(make_client, fake_check, "tx_merge", fields=genuine).status_code == 200


@pytest.mark.parametrize(
    "answer",
    [{"amount": "five hundred"}, {"amount": [500]}, {"currency": "francs"}, {"msisdn": "n/a"}],
    ids=["amount text", "amount list", "currency", "msisdn"],
)
def test_an_unreadable_compared_field_is_503(
    answered: Answered, engine: Engine, answer: dict[str, object]
) -> None:
    response = answered(answer, "tx_unreadable")
    assert response.status_code == 503
    assert response.json()["error"] == "confirmation_unavailable"
    assert count_events(engine) == 0


def test_normalisation_rules() -> None:
    assert decimal_value("500") == decimal_value("500.00") == decimal_value(500) == 500
    assert decimal_value(" 1 000 ") == decimal_value("1\u202f000") == 1000
    assert decimal_value("10.50") == decimal_value(10.5)
    for junk in ("", "1e3", "-5", "5,0", "\u0665", True, None, "9" * 19):
        assert decimal_value(junk) is None
    assert phone_digits("+237 670-000-000") == phone_digits("00237670000000") == "237670000000"
    assert phone_digits("order-1237670000000") is None  # a value merged in front of the digits
    assert phone_digits("") is None
    assert same_number("237670000000", "670000000")
    assert same_number("670000000", "237670000000")
    assert not same_number("237670000000", "7670000000000")
    assert not same_number("2376700", "6700")  # too short to be a national number
    assert not same_number("", "")

"""Monetbil provider: the SDK's sign rule, form parsing, status mapping and payment updates."""

from __future__ import annotations

import hashlib
import random
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_pipeline.models import PaymentStatus, Provider
from payments_pipeline.providers import monetbil
from payments_pipeline.providers.errors import PayloadError, SignatureError

SECRET = "ms_secret_ABC123"

# A realistic notification body. Its sign was computed by PHP 8.2 running Monetbil's own
# `Monetbil::sign` (ksort + implode + md5) on `parse_str` of this body, not by our code.
PHP_BODY = (
    "service=svc_123&transaction_id=TX-2024-0001"
    "&transaction_uuid=6f1c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6&msisdn=237670000000&amount=1500"
    "&fee=30&status=1&message=Paiement+r%C3%A9ussi+%21&currency=XAF&item_ref=order-42"
    "&payment_ref=pay-42&user=u%2B7"
)
PHP_SIGN = "63fd2f8d825e7c1ebc5f9b6fa2718b3f"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def notification(**extra: str) -> dict[str, str]:
    fields = {"transaction_id": "TX1", "status": "1", "amount": "500", "currency": "XAF"}
    fields.update(extra)
    return fields


# --- the sign rule ----------------------------------------------------------------------------


def test_sign_matches_monetbils_php_sdk() -> None:
    fields = monetbil.parse_form(PHP_BODY)
    assert monetbil.compute_sign(fields, SECRET) == PHP_SIGN
    monetbil.verify_signature({**fields, "sign": PHP_SIGN}, SECRET)


def test_sign_is_secret_then_raw_values_sorted_by_name() -> None:
    fields = {"transaction_id": "T1", "amount": "500", "status": "1", "service": "svc"}
    # amount < service < status < transaction_id
    assert monetbil.compute_sign(fields, "secret") == md5("secret500svc1T1")


def test_names_sort_in_byte_order() -> None:
    # "B" 0x42 < "Z" 0x5a < "_b" 0x5f < "a" 0x61: PHP ksort order, not case-insensitive.
    fields = {"a": "1", "_b": "2", "Z": "3", "B": "4"}
    assert monetbil.compute_sign(fields, "k") == md5("k4321")


def test_values_are_decoded_before_signing_and_sign_is_left_out() -> None:
    fields = monetbil.parse_form("message=Hello+World%21&transaction_id=T1&status=1&sign=zz")
    assert fields["message"] == "Hello World!"
    assert monetbil.compute_sign(fields, "k") == md5("kHello World!1T1")


def test_sign_fields_adds_a_valid_sign_without_touching_its_input() -> None:
    fields = notification(sign="stale")
    signed = monetbil.sign_fields(fields, SECRET)
    assert fields["sign"] == "stale"
    assert signed == {**notification(), "sign": monetbil.compute_sign(notification(), SECRET)}
    monetbil.verify_signature(signed, SECRET)


@pytest.mark.parametrize(
    ("fields", "secret", "message"),
    [
        ({**notification(), "sign": PHP_SIGN}, None, "no Monetbil service secret"),
        ({**notification(), "sign": PHP_SIGN}, "", "no Monetbil service secret"),
        ({**notification(), "sign": PHP_SIGN}, "  ", "no Monetbil service secret"),
        (notification(), SECRET, "missing sign"),
        ({**notification(), "sign": ""}, SECRET, "missing sign"),
        ({**notification(), "sign": PHP_SIGN}, SECRET, "does not match"),
        (
            {**monetbil.sign_fields(notification(), SECRET), "amount": "5000"},
            SECRET,
            "does not match",
        ),
        ({**monetbil.sign_fields(notification(), SECRET), "extra": "x"}, SECRET, "does not match"),
        (monetbil.sign_fields(notification(), "other"), SECRET, "does not match"),
        (
            {**notification(), "sign": monetbil.compute_sign(notification(), SECRET).upper()},
            SECRET,
            "does not match",
        ),
        ({**notification(), "sign": "\u00e9" * 32}, SECRET, "does not match"),
        ({**notification(message="\ud800"), "sign": PHP_SIGN}, SECRET, "not encodable"),
    ],
)
def test_verify_rejections_leak_nothing(
    fields: dict[str, str], secret: str | None, message: str
) -> None:
    with pytest.raises(SignatureError, match=message) as info:
        monetbil.verify_signature(fields, secret)
    text = str(info.value) + repr(info.value)
    for leak in (SECRET, fields.get("sign") or SECRET, "TX1", "500"):
        assert leak not in text
    assert info.value.__context__ is None or info.value.__suppress_context__


safe_text = st.text(st.characters(codec="utf-8"), max_size=20)


@given(fields=st.dictionaries(safe_text, safe_text, max_size=8), secret=safe_text.filter(str.strip))
def test_fuzz_sign_fields_always_verifies(fields: dict[str, str], secret: str) -> None:
    monetbil.verify_signature(monetbil.sign_fields(fields, secret), secret)


@given(fields=st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=8))
def test_fuzz_verify_only_raises_signature_error(fields: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        monetbil.verify_signature(fields, SECRET)


# --- form parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [PHP_BODY, PHP_BODY.encode()])
def test_parse_form_decodes_fields(body: str | bytes) -> None:
    fields = monetbil.parse_form(body)
    assert fields["message"] == "Paiement réussi !"
    assert fields["user"] == "u+7"
    assert fields["transaction_id"] == "TX-2024-0001"
    assert len(fields) == 12


def test_parse_form_keeps_blank_values() -> None:
    assert monetbil.parse_form("transaction_id=T&status=0&email=&flag") == {
        "transaction_id": "T",
        "status": "0",
        "email": "",
        "flag": "",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"transaction_id=T\xff&status=1", "not UTF-8"),
        ("transaction_id=T\udcff&status=1", "not encodable"),
        ("transaction_id=T%FF&status=1", "not a valid form"),
        ("&".join(["a=1"] * 300) + "&transaction_id=T&status=1", "not a valid form"),
        ("", "empty"),
        (b"", "empty"),
        ("  \n", "empty"),
        ("transaction_id=T&status=1&status=0", "repeated"),
        ("transaction_id=T&transaction_id=T&status=1", "repeated"),
        ("transaction_id=T&status=1&=x", "empty name"),
        ("status=1&amount=5", "transaction_id is missing"),
        ("transaction_id=&status=1", "transaction_id is missing"),
        ("transaction_id=+&status=1", "transaction_id is missing"),
        ("transaction_id=a%00b&status=1", "transaction_id is longer"),
        ("transaction_id=T&amount=5", "status is missing"),
        ("transaction_id=T&status=", "status is missing"),
    ],
)
def test_parse_form_rejects(body: str | bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        monetbil.parse_form(body)


@pytest.mark.parametrize(
    "body", ["transaction_id=T&status=1&status=0", "transaction_id=T&transaction_id=T&status=1"]
)
def test_a_repeated_name_is_a_duplicate_field_error(body: str) -> None:
    with pytest.raises(monetbil.DuplicateFieldError, match="repeated"):
        monetbil.parse_form(body)


def test_field_names_outside_monetbils_set_are_refused() -> None:
    monetbil.check_field_names(monetbil.parse_form(PHP_BODY + "&sign=" + PHP_SIGN))
    for name in ("payment_ref2", "payment_reg", "Payment_ref", "payment_ref ", "notify_url"):
        with pytest.raises(monetbil.UnknownFieldError) as refused:
            monetbil.check_field_names({**notification(), name: ""})
        assert refused.value.name == name
        assert name not in str(refused.value)  # the message is fixed: it reaches a response


def test_loggable_name_shows_identifiers_only() -> None:
    assert monetbil.loggable_name("payment_ref2") == "payment_ref2"
    for name in ("a b", "x" * 41, "<script>", "caf\u00e9", ""):
        assert monetbil.loggable_name(name) == "(not an identifier)"


def test_everything_the_project_sends_is_inside_the_documented_set() -> None:
    # The soak's stories, the samples (demo, scripts) and the receiver tests' notifications all
    # name their fields as Monetbil does; a name outside the set would be refused at the door.
    from payments_pipeline.providers import samples
    from payments_pipeline_tests.http import support
    from soak.stories import StoryFactory

    maker = StoryFactory(
        random.Random(1), stripe_secret="s", monetbil_secret="m", out_of_order_chance=0.0
    )
    sent: list[dict[str, str]] = [
        samples.monetbil_fields("tx", sign="x"),
        support.monetbil_fields("tx"),
    ]
    while len(sent) < 12:
        story = maker.story()
        sent += [dict(e.fields) for e in story.events if e.fields]
        forged = maker.forged()  # refused by its sign, not by a name
        sent += [dict(forged.fields)] if forged.fields else []
    for fields in sent:
        monetbil.check_field_names(fields)


@given(st.one_of(st.text(), st.binary()))
def test_fuzz_parse_form_only_raises_payload_error(body: str | bytes) -> None:
    try:
        fields = monetbil.parse_form(body)
    except PayloadError:
        return
    assert fields["transaction_id"].strip() and fields["status"]


@given(
    fields=st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
        safe_text,
        max_size=8,
    )
)
def test_canonical_payload_round_trips_and_ignores_order(fields: dict[str, str]) -> None:
    fields = {**fields, "transaction_id": "TX1", "status": "7"}
    payload = monetbil.canonical_payload(fields)
    assert monetbil.parse_form(payload) == fields
    assert monetbil.canonical_payload(dict(reversed(list(fields.items())))) == payload


def test_canonical_payload_is_sorted_and_urlencoded() -> None:
    fields = {"status": "1", "message": "a b&c", "transaction_id": "T", "sign": "s"}
    assert monetbil.canonical_payload(fields) == "message=a+b%26c&sign=s&status=1&transaction_id=T"


# --- statuses and ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        ("1", "payment.success"),
        ("0", "payment.failed"),
        ("-1", "payment.cancelled"),
        ("7", "payment.success"),
        ("8", "payment.failed"),
        ("9", "payment.cancelled"),
    ],
)
def test_status_mapping(status: str, event_type: str) -> None:
    assert monetbil.event_type_for(notification(status=status)) == event_type


@pytest.mark.parametrize("status", ["2", "", "01", " 1", "-0", "success", "6", "10"])
def test_unknown_status_is_a_payload_error(status: str) -> None:
    with pytest.raises(PayloadError, match="status"):
        monetbil.event_type_for(notification(status=status))


def test_event_id_is_the_transaction_and_its_status() -> None:
    # a later status of one transaction is a new event; the same status again, a duplicate
    assert monetbil.event_id_for(notification(transaction_id="TX-77", status="0")) == "TX-77:0"
    assert monetbil.event_id_for(notification(transaction_id="TX-77", status="1")) == "TX-77:1"
    assert monetbil.event_id_for(notification(transaction_id="TX-77", status="-1")) == "TX-77:-1"
    with pytest.raises(PayloadError):
        monetbil.event_id_for({"status": "1"})
    with pytest.raises(PayloadError, match="status"):
        monetbil.event_id_for(notification(transaction_id="TX-77", status="5"))


# --- payment updates --------------------------------------------------------------------------


def body(**fields: str) -> str:
    return urlencode(notification(**{"payment_ref": "order-1", **fields}))


@pytest.mark.parametrize(
    ("event_type", "status_code", "status"),
    [
        ("payment.success", "1", PaymentStatus.SUCCEEDED),
        ("payment.failed", "0", PaymentStatus.FAILED),
        ("payment.cancelled", "-1", PaymentStatus.CANCELLED),
        ("payment.success", "7", PaymentStatus.SUCCEEDED),
        ("payment.failed", "8", PaymentStatus.FAILED),
        ("payment.cancelled", "9", PaymentStatus.CANCELLED),
    ],
)
def test_payment_update_status(event_type: str, status_code: str, status: PaymentStatus) -> None:
    update = monetbil.payment_update(event_type, body(status=status_code, payment_ref="P1"))
    assert update is not None
    assert (update.provider, update.reference, update.status) == (Provider.MONETBIL, "P1", status)
    assert (update.amount, update.currency, update.occurred_at) == (500, "XAF", None)


def test_reference_is_payment_ref_even_beside_item_ref() -> None:
    update = monetbil.payment_update("payment.success", body(payment_ref="P1", item_ref="I1"))
    assert update is not None and update.reference == "P1"
    assert monetbil.reference_for({"payment_ref": "P1", "item_ref": "I1"}) == "P1"


@pytest.mark.parametrize(
    "fields",
    [
        {"payment_ref": " ", "item_ref": "I1"},
        {"item_ref": "I1"},
        {"payment_ref": "", "item_ref": ""},
        {},
    ],
)
def test_no_payment_ref_is_refused_with_no_fallback(fields: dict[str, str]) -> None:
    # No fallback to item_ref or transaction_id: the sign does not cover field names, so a
    # renamed payment_ref would otherwise move the payment item_ref names.
    payload = urlencode({**notification(), **fields})
    with pytest.raises(PayloadError, match="payment_ref is missing"):
        monetbil.payment_update("payment.success", payload)
    with pytest.raises(PayloadError, match="payment_ref is missing"):
        monetbil.reference_for(fields)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("500", "XAF", 500),
        (" 1500 ", "XAF", 1500),
        ("500.00", "XAF", 500),
        ("1 000", "XAF", 1000),
        ("1\u00a0000", "XAF", 1000),
        ("10.50", "USD", 1050),
        ("10", "EUR", 1000),
        ("1,000.25", "USD", 100025),
        ("1.500", "KWD", 1500),
    ],
)
def test_amounts_become_minor_units_of_their_currency(
    amount: str, currency: str, expected: int
) -> None:
    update = monetbil.payment_update("payment.success", body(amount=amount, currency=currency))
    assert update is not None and (update.amount, update.currency) == (expected, currency)
    assert update.amount_received == expected


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.5", "XAF", "decimals"),  # XAF has no minor unit: no rounding of money
        ("10.505", "USD", "decimals"),
        ("", "XAF", "missing"),
        ("-5", "XAF", "not a number"),
        ("1e3", "XAF", "not a number"),
        ("\u0665", "XAF", "not a number"),
        ("1 0000", "XAF", "not a number"),
        ("9" * 19, "XAF", "too large"),
        ("5", "ZZZ", "ISO 4217"),
        ("5", "XAU", "minor unit"),
    ],
)
def test_an_unreadable_amount_is_a_payload_error(amount: str, currency: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        monetbil.payment_update("payment.success", body(amount=amount, currency=currency))


def test_currency_uppercased_with_xaf_default() -> None:
    assert monetbil.payment_update("payment.success", body(currency="xof")).currency == "XOF"  # type: ignore[union-attr]
    assert monetbil.payment_update("payment.success", body(currency="")).currency == "XAF"  # type: ignore[union-attr]
    no_currency = "transaction_id=T&status=1&payment_ref=P&amount=5"
    assert monetbil.payment_update("payment.success", no_currency).currency == "XAF"  # type: ignore[union-attr]
    with pytest.raises(PayloadError, match="currency"):
        monetbil.payment_update("payment.success", body(currency="francs"))


@pytest.mark.parametrize(("status", "live"), [("1", True), ("0", True), ("7", False), ("9", False)])
def test_test_mode_statuses_are_not_live(status: str, live: bool) -> None:
    event_type = monetbil.event_type_for({"status": status})
    update = monetbil.payment_update(event_type, body(status=status))
    assert update is not None and update.livemode is live
    assert update.amount_received == (update.amount if status in ("1", "7") else None)


@pytest.mark.parametrize(
    "event_type", ["payment.refunded", "payment.pending", "", "PAYMENT.SUCCESS"]
)
def test_unknown_event_types_are_none(event_type: str) -> None:
    assert monetbil.payment_update(event_type, body()) is None
    assert monetbil.payment_update(event_type, "") is None


def test_payment_update_rejects_mismatch_and_bad_payloads() -> None:
    with pytest.raises(PayloadError, match="does not match"):
        monetbil.payment_update("payment.failed", body(status="1"))
    with pytest.raises(PayloadError, match="status"):
        monetbil.payment_update("payment.success", body(status="5"))
    with pytest.raises(PayloadError, match="transaction_id"):
        monetbil.payment_update("payment.success", "status=1")
    with pytest.raises(PayloadError, match="payment_ref"):
        monetbil.payment_update("payment.success", body(payment_ref="x" * 300))

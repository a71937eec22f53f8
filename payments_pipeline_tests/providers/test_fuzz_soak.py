r"""Fuzzing for the soak (issue 6): what the signature checks *guarantee*, not only that they do not
crash, and a long run by hand.

test_stripe.py and test_monetbil.py already throw arbitrary input at both signature checks and the
form parser and require that only `SignatureError`/`PayloadError` come out. Here:

- soundness: a genuine signature verifies, and no single-character change of the signed content,
  of the signature or of the Stripe timestamp does;
- structure-aware mutation: valid signed deliveries mutated one character at a time (the inputs a
  random fuzzer almost never reaches) raise only the documented errors, and a mutated Monetbil
  form that still verifies signs exactly the same value string as the original (the most
  Monetbil's scheme promises: the sign covers the values, in name order, not the names or the
  boundaries between values);
- the form parser round-trips every notification a client can encode, and the query-string
  variant's canonical payload verifies like the original.

Each property runs 200 examples in the suite. For a long run by hand:

    PAYMENTS_FUZZ_EXAMPLES=100000 .venv/bin/pytest -q \
        payments_pipeline_tests/providers/test_fuzz_soak.py
"""

from __future__ import annotations

import os
from urllib.parse import urlencode

import pytest
import stripe as stripe_sdk
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from payments_pipeline.providers import monetbil, stripe
from payments_pipeline.providers.errors import PayloadError, SignatureError

EXAMPLES = int(os.environ.get("PAYMENTS_FUZZ_EXAMPLES") or 200)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T = 1_700_000_000
SECRET = "whsec_fuzz_0123456789abcdef"
MB_SECRET = "mb_fuzz_secret_42"

utf8_text = st.text(st.characters(codec="utf-8"), max_size=40)
field_names = st.text(
    st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=12
).filter(lambda n: n != "sign")
HEX = "0123456789abcdef"


def _mutate(text: str, position: int, kind: int, char: str) -> str:
    """One character replaced, inserted or deleted at `position` (modulo the length)."""
    if not text:
        return char
    i = position % len(text)
    if kind == 0:
        return text[:i] + char + text[i + 1 :]
    if kind == 1:
        return text[:i] + char + text[i:]
    return text[:i] + text[i + 1 :]


mutations = st.tuples(
    st.integers(0, 10_000),
    st.integers(0, 2),
    st.sampled_from(list("&=%+ a0Z\u00e9;#?\x7f")) | st.characters(codec="utf-8"),
)

# --- Stripe -----------------------------------------------------------------------------------


@FUZZ
@given(payload=utf8_text, timestamp=st.integers(0, 2**33))
def test_stripe_genuine_signature_verifies(payload: str, timestamp: int) -> None:
    header = stripe.sign_payload(payload, SECRET, timestamp)
    stripe.verify_signature(payload, header, [SECRET], tolerance=None)
    stripe.verify_signature(payload.encode(), header, ["whsec_other", SECRET], tolerance=None)


@FUZZ
@given(payload=utf8_text, mutation=mutations)
def test_stripe_changed_payload_never_verifies(
    payload: str, mutation: tuple[int, int, str]
) -> None:
    header = stripe.sign_payload(payload, SECRET, T)
    changed = _mutate(payload, *mutation)
    if changed == payload:
        return
    with pytest.raises(SignatureError):
        stripe.verify_signature(changed, header, [SECRET], tolerance=None)


@FUZZ
@given(
    payload=utf8_text,
    position=st.integers(0, 63),
    digit=st.sampled_from(HEX),
    delta=st.integers(-(10**6), 10**6).filter(bool),
)
def test_stripe_changed_signature_or_timestamp_never_verifies(
    payload: str, position: int, digit: str, delta: int
) -> None:
    good = stripe.sign_payload(payload, SECRET, T).split("v1=", 1)[1]
    if good[position] != digit:
        bad = good[:position] + digit + good[position + 1 :]
        with pytest.raises(SignatureError):
            stripe.verify_signature(payload, f"t={T},v1={bad}", [SECRET], tolerance=None)
    with pytest.raises(SignatureError):
        stripe.verify_signature(payload, f"t={T + delta},v1={good}", [SECRET], tolerance=None)


@FUZZ
@given(payload=utf8_text, mutation=mutations)
def test_stripe_mutated_header_raises_only_signature_error(
    payload: str, mutation: tuple[int, int, str]
) -> None:
    header = _mutate(stripe.sign_payload(payload, SECRET, T), *mutation)
    try:
        stripe.verify_signature(payload, header, [SECRET], tolerance=None)
    except SignatureError:
        return
    # Still valid: the mutation left `t` and a `v1` intact (e.g. it touched only a separator).
    timestamp, signatures = stripe_sdk.WebhookSignature._get_timestamp_and_signatures(header, "v1")
    assert timestamp == T
    assert stripe.sign_payload(payload, SECRET, T).split("v1=", 1)[1] in signatures


# --- Monetbil ---------------------------------------------------------------------------------

notifications = st.dictionaries(field_names, utf8_text, max_size=8).map(
    lambda extra: {**extra, "transaction_id": "TX-fuzz-1", "status": "1"}
)


def _values(fields: dict[str, str]) -> str:
    return "".join(v for k, v in sorted(fields.items()) if k != monetbil.SIGN_FIELD)


@FUZZ
@given(fields=notifications)
def test_monetbil_form_round_trips_and_verifies(fields: dict[str, str]) -> None:
    signed = monetbil.sign_fields(fields, MB_SECRET)
    parsed = monetbil.parse_form(urlencode(signed))
    assert parsed == signed
    monetbil.verify_signature(parsed, MB_SECRET)
    canonical = monetbil.parse_form(monetbil.canonical_payload(parsed))
    assert canonical == signed  # the query-string variant's stored payload
    monetbil.verify_signature(canonical, MB_SECRET)


@FUZZ
@given(fields=notifications, data=st.data())
def test_monetbil_changed_values_never_verify(fields: dict[str, str], data: st.DataObject) -> None:
    signed = monetbil.sign_fields(fields, MB_SECRET)
    name = data.draw(st.sampled_from(sorted(n for n in signed if n != monetbil.SIGN_FIELD)))
    changed = {**signed, name: data.draw(utf8_text.filter(lambda v: v != signed[name]))}
    with pytest.raises(SignatureError):
        monetbil.verify_signature(changed, MB_SECRET)
    extra = data.draw(field_names.filter(lambda n: n not in signed))
    added = {**signed, extra: data.draw(utf8_text.filter(bool))}
    with pytest.raises(SignatureError):
        monetbil.verify_signature(added, MB_SECRET)


@FUZZ
@given(fields=notifications, mutation=mutations)
def test_monetbil_mutated_body_raises_only_documented_errors(
    fields: dict[str, str], mutation: tuple[int, int, str]
) -> None:
    signed = monetbil.sign_fields(fields, MB_SECRET)
    body = _mutate(urlencode(signed), *mutation)
    try:
        parsed = monetbil.parse_form(body)
        monetbil.verify_signature(parsed, MB_SECRET)
    except (PayloadError, SignatureError):
        return
    # What a verifying mutation can have changed: names or boundaries, never the signed values.
    assert _values(parsed) == _values(signed)


# --- a finding of this fuzzing: the sign covers values, not names ------------------------------


def test_monetbil_renamed_reference_field_does_not_move_the_payment() -> None:
    # Found by the fuzzing above: with `payment_ref` renamed, the sign still verifies. The
    # reference used to fall back to item_ref, moving the payment item_ref names; now a
    # notification without payment_ref is refused.
    fields = {"transaction_id": "TX-9", "status": "1", "amount": "500", "currency": "XAF"}
    signed = monetbil.sign_fields({**fields, "item_ref": "item-9", "payment_ref": "order-1"}, "k")
    renamed = {("payment_reg" if k == "payment_ref" else k): v for k, v in signed.items()}
    monetbil.verify_signature(renamed, "k")  # the finding: names are not signed
    with pytest.raises(PayloadError, match="payment_ref is missing"):
        monetbil.payment_update(monetbil.SUCCESS, urlencode(renamed))
    with pytest.raises(PayloadError, match="payment_ref is missing"):
        monetbil.reference_for(renamed)


documented_names = st.sampled_from(sorted(monetbil.NOTIFICATION_FIELDS - {monetbil.SIGN_FIELD}))


@FUZZ
@given(
    fields=notifications,
    new_name=field_names | documented_names,
    reference=utf8_text.filter(str.strip),
)
def test_monetbil_a_verifying_rename_of_payment_ref_is_refused(
    fields: dict[str, str], new_name: str, reference: str
) -> None:
    signed = monetbil.sign_fields({**fields, monetbil.REFERENCE_FIELD: reference}, MB_SECRET)
    assume(new_name not in signed)
    renamed = {(new_name if k == monetbil.REFERENCE_FIELD else k): v for k, v in signed.items()}
    if new_name not in monetbil.NOTIFICATION_FIELDS:  # the receiver refuses it by its name
        with pytest.raises(monetbil.UnknownFieldError):
            monetbil.check_field_names(renamed)
    try:
        monetbil.verify_signature(renamed, MB_SECRET)
    except SignatureError:
        return  # the rename changed the sorted order of the values
    with pytest.raises(PayloadError):  # and, renamed onto any name, it names no payment
        monetbil.reference_for(renamed)


@FUZZ
@given(
    fields=st.dictionaries(documented_names, utf8_text, max_size=10),
    extra=field_names.filter(lambda n: n not in monetbil.NOTIFICATION_FIELDS),
)
def test_monetbil_field_names_are_checked_against_the_documented_set(
    fields: dict[str, str], extra: str
) -> None:
    signed = monetbil.sign_fields(fields, MB_SECRET)
    monetbil.check_field_names(signed)  # Monetbil's own names (and sign) pass
    with pytest.raises(monetbil.UnknownFieldError) as refused:
        monetbil.check_field_names({**signed, extra: ""})
    assert refused.value.name == extra  # for the log line; the message is fixed:
    assert str(refused.value) == "a field name is not one of Monetbil's notification fields"


def test_monetbil_the_name_check_stops_a_rename_onto_a_name_of_ones_own() -> None:
    # The attack: `last_name < payment_ref < payment_ref2 < phone`, so renaming last_name
    # to payment_ref and payment_ref to payment_ref2 keeps the values' order and the sign, and the
    # reference becomes whatever the payer typed as last name. payment_ref2 is no name of
    # Monetbil's: refused.
    fields = {"transaction_id": "TX-9", "status": "1", "phone": "237670000000"}
    signed = monetbil.sign_fields({**fields, "last_name": "order-2", "payment_ref": "order-1"}, "k")
    shifted = {k: v for k, v in signed.items() if k not in {"last_name", "payment_ref"}}
    shifted |= {"payment_ref": "order-2", "payment_ref2": "order-1"}
    monetbil.verify_signature(shifted, "k")
    assert monetbil.reference_for(shifted) == "order-2"
    with pytest.raises(monetbil.UnknownFieldError):
        monetbil.check_field_names(shifted)


def test_monetbil_sign_and_names_cannot_stop_an_order_preserving_rename() -> None:
    # What no parser can fix, written down: `msisdn < payment_ref < phone` are all Monetbil's
    # names, so with no phone field in the notification, renaming msisdn to payment_ref and
    # payment_ref to phone keeps the values' order, the sign and the name check. The reference
    # becomes the payer's number. Only a second opinion from Monetbil catches it (checkPayment
    # naming the transaction's payment_ref, or its msisdn disagreeing with the shifted phone):
    # see the receiver's test_check_payment_naming_another_payment_ref_is_refused.
    fields = {"transaction_id": "TX-9", "status": "1", "msisdn": "237670000000"}
    signed = monetbil.sign_fields({**fields, "payment_ref": "order-1"}, "k")
    shifted = {k: v for k, v in signed.items() if k not in {"msisdn", "payment_ref"}}
    shifted |= {"payment_ref": "237670000000", "phone": "order-1"}
    monetbil.verify_signature(shifted, "k")
    monetbil.check_field_names(shifted)
    assert monetbil.reference_for(shifted) == "237670000000"

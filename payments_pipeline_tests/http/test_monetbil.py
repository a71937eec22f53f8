"""`/webhooks/monetbil`: form notifications and the query-string variant, verified by `sign`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.models import EventStatus, PaymentStatus, Provider
from payments_pipeline.providers import monetbil

from ..helpers import RecordingDispatcher, fetch_event
from .conftest import ClientFactory
from .support import (
    FORM_HEADERS,
    MONETBIL_SECRET,
    Client,
    Refused,
    count_events,
    form,
    monetbil_fields,
    refusals,
)

URL = "/webhooks/monetbil"


def test_form_notification_is_recorded_then_processed(client: Client, engine: Engine) -> None:
    body = form(monetbil_fields("tx_form", amount="2500"))
    response = client.post(URL, content=body, headers=FORM_HEADERS)
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    client.wait_dispatched()
    event = fetch_event(engine, response.json()["event_id"])
    assert (event.provider, event.provider_event_id) == (Provider.MONETBIL, "tx_form:1")
    assert event.event_type == "payment.success"
    assert event.payload == body  # the raw form body as received
    assert event.status is EventStatus.PROCESSED
    with engine.connect() as conn:
        payment = store.get_payment(conn, provider=Provider.MONETBIL, reference="order-tx_form")
    assert payment is not None and payment.status is PaymentStatus.SUCCEEDED
    assert payment.amount == 2500


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_query_string_variant_stores_the_canonical_form(
    client: Client, engine: Engine, method: str
) -> None:
    fields = monetbil_fields(f"tx_query_{method}", status="0")
    response = client.request(method, f"{URL}?{form(fields)}")
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    client.wait_dispatched()
    event = fetch_event(engine, response.json()["event_id"])
    assert event.event_type == "payment.failed"
    assert event.payload == monetbil.canonical_payload(fields)
    assert monetbil.parse_form(event.payload) == fields  # re-verifiable from what is stored
    monetbil.verify_signature(monetbil.parse_form(event.payload), MONETBIL_SECRET)


def test_a_form_body_is_read_alone_like_monetbils_post_handler(
    client: Client, engine: Engine
) -> None:
    body = form(monetbil_fields("tx_body_wins"))
    response = client.post(f"{URL}?route=notify&token=xyz", content=body, headers=FORM_HEADERS)
    assert response.status_code == 200
    assert fetch_event(engine, response.json()["event_id"]).payload == body


def test_test_mode_statuses_map_to_the_same_event_types(client: Client, engine: Engine) -> None:
    for status, event_type in (
        ("7", "payment.success"),
        ("8", "payment.failed"),
        ("9", "payment.cancelled"),
    ):
        body = form(monetbil_fields(f"tx_test_{status}", status=status))
        response = client.post(URL, content=body, headers=FORM_HEADERS)
        assert fetch_event(engine, response.json()["event_id"]).event_type == event_type


def _refusals() -> Iterator[tuple[str, str, str, dict[str, str], bytes, int, str]]:
    good = monetbil_fields("tx_refused")
    body = form(good).encode()
    yield (
        "bad sign",
        "POST",
        URL,
        FORM_HEADERS,
        form({**good, "sign": "0" * 32}).encode(),
        400,
        ("invalid_signature"),
    )
    tampered = form({**good, "amount": "1"}).encode()
    yield "tampered amount", "POST", URL, FORM_HEADERS, tampered, 400, "invalid_signature"
    unsigned = form({k: v for k, v in good.items() if k != "sign"}).encode()
    yield "missing sign", "POST", URL, FORM_HEADERS, unsigned, 400, "invalid_signature"
    wrong = form(monetbil_fields("tx_refused", secret="another-secret")).encode()
    yield "other service's secret", "POST", URL, FORM_HEADERS, wrong, 400, "invalid_signature"
    query_bad = f"{URL}?{form({**good, 'sign': 'f' * 32})}"
    yield "bad sign in query string", "GET", query_bad, {}, b"", 400, "invalid_signature"
    unknown = form(monetbil_fields("tx_refused", status="3")).encode()
    yield "unknown status (signed)", "POST", URL, FORM_HEADERS, unknown, 400, "malformed_payload"
    no_id = form(monetbil.sign_fields({"status": "1", "amount": "5"}, MONETBIL_SECRET)).encode()
    yield "no transaction_id", "POST", URL, FORM_HEADERS, no_id, 400, "malformed_payload"
    no_ref = monetbil_fields("tx_refused", payment_ref="")
    yield (
        "blank payment_ref (signed)",
        "POST",
        URL,
        FORM_HEADERS,
        form(no_ref).encode(),
        400,
        "malformed_payload",
    )
    # The soak fuzzing's finding: a renamed payment_ref keeps the sign; no fallback to item_ref.
    # `payment_reg` is no name Monetbil sends, so the copy is now refused by its name.
    renamed = {("payment_reg" if k == "payment_ref" else k): v for k, v in good.items()}
    monetbil.verify_signature(renamed, MONETBIL_SECRET)  # still verifies: the sign is blind to it
    yield (
        "renamed payment_ref (sign still valid)",
        "POST",
        URL,
        FORM_HEADERS,
        form(renamed).encode(),
        400,
        "unknown_field",
    )
    # A documented name dropped entirely still leaves no payment_ref: no fallback.
    dropped = monetbil.sign_fields(
        {k: v for k, v in good.items() if k != "payment_ref"}, MONETBIL_SECRET
    )
    yield (
        "no payment_ref (signed)",
        "POST",
        URL,
        FORM_HEADERS,
        form(dropped).encode(),
        400,
        ("malformed_payload"),
    )
    extra = monetbil_fields("tx_refused", notify_token="abc")
    yield (
        "unknown field (signed)",
        "POST",
        URL,
        FORM_HEADERS,
        form(extra).encode(),
        400,
        ("unknown_field"),
    )
    yield (
        "unknown field in query string (signed)",
        "GET",
        f"{URL}?{form(extra)}",
        {},
        b"",
        400,
        ("unknown_field"),
    )
    yield "repeated field", "POST", URL, FORM_HEADERS, body + b"&status=1", 400, "duplicate_field"
    repeated_query = f"{URL}?{form(good)}&payment_ref=order-other"
    yield "repeated field in query string", "GET", repeated_query, {}, b"", 400, "duplicate_field"
    yield "not UTF-8", "POST", URL, FORM_HEADERS, body + b"&x=%ff", 400, "malformed_payload"
    nul = form(monetbil_fields("tx_refused", message="a\x00b")).replace("%00", "\x00").encode()
    yield "raw NUL byte (signed)", "POST", URL, FORM_HEADERS, nul, 400, "malformed_payload"
    yield "nothing at all", "POST", URL, FORM_HEADERS, b"", 400, "malformed_payload"
    yield "GET without query", "GET", URL, {}, b"", 400, "malformed_payload"
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    yield "multipart", "POST", URL, multipart, body, 415, "unsupported_media_type"
    as_json = {"content-type": "application/json"}
    yield "JSON content type", "POST", URL, as_json, body, 415, "unsupported_media_type"
    yield "no content type", "POST", URL, {}, body, 415, "unsupported_media_type"
    yield "PUT", "PUT", URL, FORM_HEADERS, body, 405, "method_not_allowed"


@pytest.mark.parametrize("case", refusals(_refusals()))
def test_bad_input_is_refused_and_nothing_is_stored(
    make_client: ClientFactory, engine: Engine, case: Refused
) -> None:
    dispatcher = RecordingDispatcher()
    client = make_client(dispatcher)
    case.send(client)
    assert count_events(engine) == 0
    client.wait_dispatched()
    assert dispatcher.events == []


def test_no_secret_configured_refuses_every_notification(
    make_client: ClientFactory, engine: Engine
) -> None:
    client = make_client(monetbil_service_secret=None)
    response = client.post(URL, content=form(monetbil_fields("tx_x")), headers=FORM_HEADERS)
    assert response.status_code == 400
    assert response.json()["detail"] == "no Monetbil service secret is configured"
    assert count_events(engine) == 0


def test_body_over_the_limit(make_client: ClientFactory, engine: Engine) -> None:
    client = make_client(max_body_bytes=1024)
    body = form(monetbil_fields("tx_big", message="x" * 2000))
    response = client.post(URL, content=body, headers=FORM_HEADERS)
    assert response.status_code == 413
    assert count_events(engine) == 0


# --- the rename attack (the report) ----------------------------------------------------


def _return_redirect_fields(transaction_id: str, **overrides: str) -> dict[str, str]:
    """The signed fields a payer sees in Monetbil's return redirect (its return.php reads
    transaction_id, status, phone, user, item_ref, payment_ref, first_name, last_name, email).
    The payer chose their last name: here it is another order's reference."""
    fields = {
        "transaction_id": transaction_id,
        "status": "1",
        "phone": "237670000000",
        "user": "42",
        "item_ref": "item-1",
        "payment_ref": f"order-{transaction_id}",
        "first_name": "Jean",
        "last_name": "order-victim",
        "email": "jean@example.invalid",
        "amount": "500",
        "currency": "XAF",
        **overrides,
    }
    return monetbil.sign_fields(fields, MONETBIL_SECRET)


def test_the_rename_attack_is_refused_and_the_genuine_notification_still_counts(
    client: Client, engine: Engine
) -> None:
    genuine = _return_redirect_fields("tx_rename")
    # The report's attack: last_name -> payment_ref, payment_ref -> payment_ref2. The values keep
    # their sorted order (last_name < payment_ref < payment_ref2 < phone), so the sign holds.
    attack = {k: v for k, v in genuine.items() if k not in {"last_name", "payment_ref"}}
    attack |= {"payment_ref": genuine["last_name"], "payment_ref2": genuine["payment_ref"]}
    monetbil.verify_signature(attack, MONETBIL_SECRET)  # Monetbil's checkSign accepts it too
    assert monetbil.reference_for(attack) == "order-victim"

    for method, request in (
        ("POST", {"url": URL, "content": form(attack), "headers": FORM_HEADERS}),
        ("GET", {"url": f"{URL}?{form(attack)}"}),  # the return redirect's own form
    ):
        refused = client.request(method, **request)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "unknown_field"
        assert "order-victim" not in refused.text and "payment_ref2" not in refused.text
    assert count_events(engine) == 0

    accepted = client.post(URL, content=form(genuine), headers=FORM_HEADERS)
    assert accepted.status_code == 200 and accepted.json()["outcome"] == "dispatched"
    client.wait_dispatched()
    with engine.connect() as conn:
        victim = store.get_payment(conn, provider=Provider.MONETBIL, reference="order-victim")
        paid = store.get_payment(conn, provider=Provider.MONETBIL, reference="order-tx_rename")
    assert victim is None
    assert paid is not None and paid.status is PaymentStatus.SUCCEEDED
    assert count_events(engine) == 1


def test_every_documented_field_is_accepted(client: Client, engine: Engine) -> None:
    # All of Monetbil's notification fields at once (a name Monetbil does send must never be
    # refused: that would refuse every real notification).
    fields = {name: f"v-{name}" for name in monetbil.NOTIFICATION_FIELDS - {"sign"}}
    fields |= {"transaction_id": "tx_all_fields", "status": "0", "payment_ref": "order-all"}
    fields |= {"amount": "500", "currency": "XAF"}
    signed = monetbil.sign_fields(fields, MONETBIL_SECRET)
    response = client.post(URL, content=form(signed), headers=FORM_HEADERS)
    assert response.status_code == 200 and response.json()["outcome"] == "dispatched"
    assert count_events(engine) == 1

"""Our fake Stripe PaymentIntents and Charges API, through the official SDK (stripe 16): a day's
window, paging newest first, `expand`, statuses and refunds, legacy charges, auth and parameter
errors, faults, the events of its objects, 20,000 PaymentIntents of one day."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe

from payments_pipeline.providers import stripe as stripe_provider

from ..fakes.fixtures import StripeClientFactory
from ..fakes.stripe_payments_api import FakeStripePaymentsAPI

DAY = 1_780_012_800  # 2026-05-29T00:00:00Z
END = DAY + 86_399
EXPAND = ["data.latest_charge"]


def _client(
    stripe_sdk: StripeClientFactory, api: FakeStripePaymentsAPI, **options: Any
) -> stripe.StripeClient:
    return stripe_sdk(api.url, api.api_key, **options)


def _raw_pages(client: stripe.StripeClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every object of the list at `path` as the product pages it: raw_request, starting_after."""
    found: list[dict[str, Any]] = []
    while True:
        page = client.raw_request("get", path, **params).data
        assert page["object"] == "list" and page["url"] == path
        found += page["data"]
        if not page["has_more"]:
            return found
        params["starting_after"] = page["data"][-1]["id"]


def _newest_first(objects: list[dict[str, Any]]) -> list[str]:
    return [o["id"] for o in sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)]


def test_a_day_pages_newest_first_with_charges_expanded(
    stripe_payments_api: FakeStripePaymentsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_payments_api
    day = [api.add_payment_intent(created=DAY + i * 300, amount=100 + i) for i in range(250)]
    day += [api.add_payment_intent(created=END, amount=7) for _ in range(3)]  # ties: id desc
    api.add_payment_intent(created=DAY - 1, amount=1)  # the day before
    api.add_payment_intent(created=END + 1, amount=1)  # the day after
    client = _client(stripe_sdk, api)
    day_window = {"gte": DAY, "lte": END}

    listed = list(
        client.v1.payment_intents.list(
            params={"created": {"gte": DAY, "lte": END}, "limit": 100, "expand": EXPAND}
        ).auto_paging_iter()
    )

    assert [pi.id for pi in listed] == _newest_first(day)
    assert api.paths["/v1/payment_intents"] == 3
    first = listed[0]
    assert isinstance(first.latest_charge, stripe.Charge)
    assert first.latest_charge.payment_intent == first.id
    assert first.latest_charge.id == "ch_" + first.id.removeprefix("pi_")
    assert (first.amount_received, first.latest_charge.amount_captured) == (7, 7)
    assert api.queries[1]["starting_after"] == listed[99].id
    assert api.queries[0]["expand[0]"] == "data.latest_charge"

    raw = _raw_pages(client, "/v1/payment_intents", created=day_window, limit=100)
    assert [pi["id"] for pi in raw] == [pi.id for pi in listed]
    assert all(isinstance(pi["latest_charge"], str) for pi in raw)  # not expanded: the id
    expanded = _raw_pages(
        client, "/v1/payment_intents", created={"gt": DAY, "lt": END}, limit=100, expand=EXPAND
    )
    assert [pi["id"] for pi in expanded] == [pi.id for pi in listed][3:-1]
    assert expanded[0]["latest_charge"] == api.charge(expanded[0]["id"])


def test_statuses_and_their_charges(
    stripe_payments_api: FakeStripePaymentsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_payments_api
    failed = api.add_payment_intent(
        created=DAY + 1,
        amount=500,
        status="requires_payment_method",
        failed=True,
        metadata={"order": "o-1"},
    )
    canceled = api.add_payment_intent(created=DAY + 2, amount=500, status="canceled")
    processing = api.add_payment_intent(created=DAY + 3, amount=500, status="processing")
    uncaptured = api.add_payment_intent(created=DAY + 4, amount=500, status="requires_capture")
    live = api.add_payment_intent(created=DAY + 5, amount=900, currency="usd", livemode=True)
    client = _client(stripe_sdk, api)

    pi = client.v1.payment_intents.retrieve(failed["id"], params={"expand": ["latest_charge"]})
    assert (pi.status, pi.amount_received, pi.metadata.to_dict()) == (
        "requires_payment_method",
        0,
        {"order": "o-1"},
    )
    charge, error = pi.latest_charge, pi.last_payment_error
    assert isinstance(charge, stripe.Charge) and error is not None
    assert (error.charge, error.code) == (charge.id, "card_declined")
    assert (charge.status, charge.paid, charge.amount_captured) == ("failed", False, 0)
    assert charge.failure_code == "card_declined"

    gone = client.v1.payment_intents.retrieve(canceled["id"])
    assert (gone.status, gone.latest_charge, gone.canceled_at) == ("canceled", None, DAY + 2)
    assert api.charge(processing["id"])["status"] == "pending"
    held = api.charge(uncaptured["id"])
    assert (held["status"], held["captured"], held["amount_captured"]) == ("succeeded", False, 0)
    assert api.payment_intent(uncaptured["id"])["amount_capturable"] == 500
    usd = client.v1.charges.retrieve(live["latest_charge"])
    assert (usd.currency, usd.livemode, usd.amount) == ("usd", True, 900)
    assert "refunds" not in usd  # the 2024 API: refunds only when expanded


def test_refunds_and_legacy_charges(
    stripe_payments_api: FakeStripePaymentsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_payments_api
    pi = api.add_payment_intent(created=DAY + 10, amount=1000)
    half = api.add_payment_intent(created=DAY + 11, amount=1000, amount_refunded=400)
    legacy = api.add_charge(created=DAY + 12, amount=2500, currency="usd", amount_refunded=2500)
    api.add_charge(created=END + 1, amount=1, currency="usd")  # the next day

    partial = api.refund(pi["id"], 300)
    assert (partial["amount_refunded"], partial["refunded"]) == (300, False)
    whole = api.refund(pi["latest_charge"])  # the rest
    assert (whole["amount_refunded"], whole["refunded"]) == (1000, True)
    with pytest.raises(ValueError, match="refundable"):
        api.refund(pi["id"], 1)
    assert api.payment_intent(pi["id"])["amount_received"] == 1000  # refunds are the charge's

    client = _client(stripe_sdk, api)
    window = {"gte": DAY, "lte": END}
    charges = list(
        client.v1.charges.list(
            params={"created": {"gte": DAY, "lte": END}, "limit": 2}
        ).auto_paging_iter()
    )
    assert [c.id for c in charges] == [legacy["id"], half["latest_charge"], pi["latest_charge"]]
    assert charges[0].payment_intent is None and charges[0].refunded is True
    assert (charges[1].amount_refunded, charges[1].refunded) == (400, False)
    raw = _raw_pages(client, "/v1/charges", created=window, limit=100)
    assert [c["id"] for c in raw] == [c.id for c in charges]
    assert raw[2]["amount_refunded"] == 1000

    expanded = client.v1.charges.list(
        params={"created": {"gte": DAY, "lte": END}, "expand": ["data.payment_intent"]}
    )
    intent = expanded.data[1].payment_intent
    assert isinstance(intent, stripe.PaymentIntent) and intent.id == half["id"]


def test_auth_and_parameter_errors(
    stripe_payments_api: FakeStripePaymentsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_payments_api
    pi = api.add_payment_intent(created=DAY, amount=1)
    client = _client(stripe_sdk, api)
    wrong = stripe_sdk(api.url, "sk_test_wrong_key_0000")
    with pytest.raises(stripe.AuthenticationError, match=r"sk_test_\*+0000"):
        wrong.v1.payment_intents.list()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/payment_intents", {"customer": "cus_1"}, "Received unknown parameter: customer"),
        ("/v1/charges", {"payment_intent": pi["id"]}, "unknown parameter: payment_intent"),
        ("/v1/payment_intents", {"limit": 101}, "less than or equal to 100"),
        ("/v1/payment_intents", {"limit": 0}, "greater than or equal to 1"),
        ("/v1/payment_intents", {"starting_after": "pi_nope"}, "No such payment_intent"),
        ("/v1/charges", {"expand": ["data.latest_charge"]}, "cannot be expanded"),
        ("/v1/payment_intents", {"expand": ["latest_charge"]}, "cannot be expanded"),
        (f"/v1/payment_intents/{pi['id']}", {"limit": 1}, "unknown parameter: limit"),
    ]
    for path, params, message in cases:
        with pytest.raises(stripe.InvalidRequestError, match=message):
            client.raw_request("get", path, **params)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.charges.retrieve("ch_nope")
    assert missing.value.http_status == 404
    assert api.statuses == {401: 1, 400: len(cases), 404: 1}
    assert api.pages == 0


def test_faults_and_the_sdk_retries(
    stripe_payments_api: FakeStripePaymentsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_payments_api
    api.add_payment_intent(created=DAY, amount=1)
    api.fail_next(429, should_retry=True)
    api.fail_next(500)
    client = _client(stripe_sdk, api, max_network_retries=2)
    listed = client.v1.payment_intents.list(params={"created": {"gte": DAY}})
    assert len(listed.data) == 1
    assert (api.requests, api.pages, api.statuses) == (3, 1, {429: 1, 500: 1, 200: 1})
    api.fail_always(401)
    with pytest.raises(stripe.AuthenticationError):
        client.v1.charges.list()
    api.clear_faults()
    api.reset_counters()
    assert len(client.v1.charges.list().data) == 1
    assert api.paths == {"/v1/charges": 1}


def test_events_of_the_objects_as_the_receiver_reads_them(
    stripe_payments_api: FakeStripePaymentsAPI,
) -> None:
    api = stripe_payments_api
    pi = api.add_payment_intent(created=DAY, amount=1200, metadata={"order": "o-9"})
    failed = api.add_payment_intent(
        created=DAY, amount=800, status="requires_payment_method", failed=True
    )
    canceled = api.add_payment_intent(created=DAY, amount=800, status="canceled")
    legacy = api.add_charge(created=DAY, amount=300, currency="usd")
    api.refund(pi["id"], 200)

    succeeded = api.event_for(pi, "payment_intent.succeeded", created=DAY + 5)
    assert succeeded["object"] == "event" and succeeded["type"] == "payment_intent.succeeded"
    assert succeeded["created"] == DAY + 5 and succeeded["api_version"] == "2024-06-20"
    assert succeeded["data"]["object"] == api.payment_intent(pi["id"])
    refunded = api.event_for(pi["id"], "charge.refunded", created=DAY + 60)
    assert refunded["data"]["object"] == api.charge(pi["id"])
    assert refunded["data"]["object"]["amount_refunded"] == 200  # as it is now
    assert api.event_for(legacy, "charge.succeeded")["created"] == DAY  # the object's by default
    with pytest.raises(ValueError, match="no object of ours"):
        api.event_for(pi, "checkout.session.completed")

    def update(obj: dict[str, Any] | str, event_type: str) -> Any:
        body = json.dumps(api.event_for(obj, event_type))
        return stripe_provider.payment_update(event_type, body)

    assert update(pi, "payment_intent.succeeded").reference == pi["id"]
    assert update(pi["id"], "charge.refunded").reference == pi["id"]
    assert update(failed, "payment_intent.payment_failed").reference == failed["id"]
    assert update(canceled, "payment_intent.canceled").reference == canceled["id"]
    assert update(legacy, "charge.succeeded").reference == legacy["id"]


def test_twenty_thousand_payment_intents_of_one_day_page_fast(
    stripe_payments_api: FakeStripePaymentsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_payments_api
    started = time.perf_counter()
    added = [
        api.add_payment_intent(created=DAY + i * 86_400 // 20_000, amount=100 + i % 7)
        for i in range(20_000)
    ]
    built = time.perf_counter() - started
    client = _client(stripe_sdk, api)

    started = time.perf_counter()
    listed = _raw_pages(
        client, "/v1/payment_intents", created={"gte": DAY, "lte": END}, limit=100, expand=EXPAND
    )
    paged = time.perf_counter() - started

    assert [pi["id"] for pi in listed] == _newest_first(added)
    assert all(pi["latest_charge"]["payment_intent"] == pi["id"] for pi in listed)
    assert api.pages == 200
    assert built < 10 and paged < 20, f"built in {built:.1f}s, paged in {paged:.1f}s"

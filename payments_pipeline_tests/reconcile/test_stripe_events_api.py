"""Our fake Stripe Events API, through the official SDK (stripe 16): paging, the created
window, type filters, auth, faults and the SDK's retries, counters, 10,000 events."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import pytest
import stripe

from payments_pipeline.providers import samples

from ..fakes.fixtures import StripeClientFactory
from ..fakes.stripe_event_shapes import event
from ..fakes.stripe_events_api import API_KEY, FakeStripeEventsAPI, mask

T0 = 1_780_000_000
REAL_PAYLOADS = Path(
    os.environ.get("PAYMENTS_REAL_PAYLOADS")
    or Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "real-payloads"
)


def _fill(api: FakeStripeEventsAPI, count: int, *, step: int = 1) -> list[dict[str, Any]]:
    return api.add(*(event(created=T0 + i * step) for i in range(count)))


def _ids(events: list[Any]) -> list[str]:
    return [e["id"] for e in events]


def _client(
    stripe_sdk: StripeClientFactory, api: FakeStripeEventsAPI, **options: Any
) -> stripe.StripeClient:
    return stripe_sdk(api.url, api.api_key, **options)


def _raw(api: FakeStripeEventsAPI, query: str, key: str | None = API_KEY) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{api.url}/v1/events?{query}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_auto_paging_over_250_events_newest_first(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    added = _fill(stripe_events_api, 250)
    client = _client(stripe_sdk, stripe_events_api)
    listed = list(client.v1.events.list(params={"limit": 100}).auto_paging_iter())
    assert [e.id for e in listed] == _ids(added)[::-1]
    assert (stripe_events_api.pages, stripe_events_api.requests) == (3, 3)
    first, second, third = stripe_events_api.queries
    assert first == {"limit": "100"}
    assert second == {"limit": "100", "starting_after": added[150]["id"]}
    assert third["starting_after"] == added[50]["id"]
    page = client.v1.events.list()  # default limit 10
    assert (len(page.data), page.has_more, page.url, page["object"]) == (
        10,
        True,
        "/v1/events",
        "list",
    )


def test_the_list_and_its_events_have_stripes_public_shape(
    stripe_events_api: FakeStripeEventsAPI,
) -> None:
    stripe_events_api.add_event(created=T0, reference="pi_shape", amount=1500, currency="usd")
    status, listing = _raw(stripe_events_api, "limit=3")
    assert status == 200
    assert listing.keys() == {"object", "data", "has_more", "url"}  # no total_count
    [listed] = listing["data"]
    assert list(listed) == [
        "id",
        "object",
        "api_version",
        "created",
        "data",
        "livemode",
        "pending_webhooks",
        "request",
        "type",
    ]
    assert listed["id"].startswith("evt_") and len(listed["id"]) == 28
    intent = listed["data"]["object"]
    assert (intent["id"], intent["amount"], intent["amount_received"]) == ("pi_shape", 1500, 1500)
    assert (intent["status"], intent["latest_charge"][:3]) == ("succeeded", "ch_")
    assert "delivery_success" not in listed


@pytest.mark.skipif(not REAL_PAYLOADS.is_dir(), reason=f"no real payloads at {REAL_PAYLOADS}")
def test_built_objects_carry_the_fields_of_the_recorded_ones() -> None:
    recorded = json.loads(
        (REAL_PAYLOADS / "stripe-ruby-mock/payment_intent.succeeded.json").read_text()
    )
    assert set(event(created=T0)) == set(recorded)
    resources = json.loads((REAL_PAYLOADS / "stripe-mock/fixtures3.json").read_text())["resources"]
    intent = event("payment_intent.payment_failed", created=T0)["data"]["object"]
    assert set(resources["payment_intent"]) <= set(intent)
    assert intent["last_payment_error"]["type"] == "card_error"
    charge = event("charge.refunded", created=T0, reference="pi_r")["data"]["object"]
    assert set(resources["charge"]) - set(charge) == {"refunds"}  # not expanded since 2022-11-15
    assert (charge["payment_intent"], charge["refunded"]) == ("pi_r", True)


def test_created_window_bounds_and_ties(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    _fill(stripe_events_api, 30, step=10)  # created T0, T0+10, ... T0+290
    tied = [stripe_events_api.add_event(created=T0 + 100)["id"] for _ in range(3)]
    client = _client(stripe_sdk, stripe_events_api)

    def listed(**created: int) -> list[Any]:
        query: Any = {"limit": 100, "created": created}
        page = client.v1.events.list(params=query)
        return list(page.auto_paging_iter())

    assert len(listed(gte=T0 + 100, lte=T0 + 200)) == 11 + 3
    assert len(listed(gt=T0 + 100, lt=T0 + 200)) == 9
    assert len(listed(gte=T0 + 290)) == 1 and listed(gt=T0 + 290) == []
    at_100 = [e.id for e in listed(gte=T0 + 100, lte=T0 + 100)]
    assert sorted(at_100, reverse=True) == at_100 and set(tied) < set(at_100)  # ties: id desc
    window = [e.created for e in listed(gte=T0 + 50, lte=T0 + 150)]
    assert window == sorted(window, reverse=True)
    pages = list(
        client.v1.events.list(params={"limit": 2, "created": {"lte": T0 + 100}}).auto_paging_iter()
    )
    assert len(pages) == 11 + 3
    status, exact = _raw(stripe_events_api, f"created={T0 + 100}&limit=100")
    assert status == 200 and len(exact["data"]) == 4


def test_type_filters_and_delivery_state(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    api = stripe_events_api
    ok = api.add_event("payment_intent.succeeded", created=T0)
    failed = api.add_event("payment_intent.payment_failed", created=T0 + 1, delivered=False)
    refund = api.add_event("charge.refunded", created=T0 + 2, delivered=False)
    api.add(samples.stripe_event("evt_from_samples", "customer.created", created=T0 + 3))
    client = _client(stripe_sdk, api)

    def ids(**params: Any) -> list[str]:
        query: Any = {"limit": 100, **params}
        return [e.id for e in client.v1.events.list(params=query).data]

    assert ids(types=["charge.refunded", "payment_intent.succeeded"]) == [refund["id"], ok["id"]]
    assert api.queries[-1]["types[0]"] == "charge.refunded"  # the SDK indexes arrays
    assert ids(type="payment_intent.*") == [failed["id"], ok["id"]]
    assert ids(delivery_success=False) == [refund["id"], failed["id"]]
    assert api.undelivered_ids() == {failed["id"], refund["id"]}
    api.mark_delivered(refund["id"])
    assert ids(delivery_success=False) == [failed["id"]]
    pending = {e.id: e.pending_webhooks for e in client.v1.events.list().data}
    assert pending == {"evt_from_samples": 0, refund["id"]: 0, failed["id"]: 1, ok["id"]: 0}
    assert client.v1.events.retrieve(failed["id"]).type == "payment_intent.payment_failed"
    paged = client.v1.events.list(params={"limit": 1, "type": "payment_intent.*"})
    assert [e.id for e in paged.auto_paging_iter()] == [failed["id"], ok["id"]]


def test_events_added_while_serving_are_listed(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    client = _client(stripe_sdk, stripe_events_api)
    assert client.v1.events.list().data == []
    late = stripe_events_api.add_event(created=T0)
    assert [e.id for e in client.v1.events.list().data] == [late["id"]]


def test_bad_parameters_are_400s(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    client = _client(stripe_sdk, stripe_events_api)
    for params, match in [
        ({"limit": 101}, "less than or equal to 100"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"starting_after": "evt_unknown"}, "No such event: 'evt_unknown'"),
        ({"colour": "blue"}, "Received unknown parameter: colour"),
        ({"types": [f"t.{i}" for i in range(21)]}, "at most 20"),
    ]:
        with pytest.raises(stripe.InvalidRequestError, match=match):
            client.v1.events.list(params=cast(Any, params))


def test_a_wrong_or_missing_key_is_401(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    wrong = stripe_sdk(stripe_events_api.url, "sk_test_wrongkey1234")
    with pytest.raises(stripe.AuthenticationError, match=r"sk_test_\*{8}1234"):
        wrong.v1.events.list()
    assert _raw(stripe_events_api, "", key="sk_test_wrongkey1234") == (
        401,
        {
            "error": {
                "type": "invalid_request_error",
                "message": "Invalid API Key provided: sk_test_********1234",
            }
        },
    )
    status, body = _raw(stripe_events_api, "", key=None)
    assert status == 401 and "did not provide an API key" in body["error"]["message"]
    assert mask("sk_test_wrongkey") == "sk_test_****gkey"
    stripe_events_api.fail_next(401)  # a key revoked under a running client
    with pytest.raises(stripe.AuthenticationError):
        _client(stripe_sdk, stripe_events_api).v1.events.list()
    assert stripe_events_api.pages == 0 and stripe_events_api.statuses[401] == 4


def test_a_429_that_says_retry_is_retried_by_the_sdk(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    _fill(stripe_events_api, 3)
    stripe_events_api.fail_next(429, 2, should_retry=True)
    client = _client(stripe_sdk, stripe_events_api, max_network_retries=2)
    assert len(client.v1.events.list().data) == 3
    assert (stripe_events_api.requests, stripe_events_api.pages) == (3, 1)
    assert stripe_events_api.statuses == {429: 2, 200: 1}


def test_a_429_without_the_header_is_not_retried(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    stripe_events_api.fail_next(429)
    client = _client(stripe_sdk, stripe_events_api, max_network_retries=2)
    with pytest.raises(stripe.RateLimitError):
        client.v1.events.list()
    assert stripe_events_api.requests == 1
    stripe_events_api.fail_next(429, should_retry=False)
    with pytest.raises(stripe.RateLimitError):
        client.v1.events.list()
    assert stripe_events_api.requests == 2
    assert len(client.v1.events.list().data) == 0  # the faults are spent


def test_a_500_every_time_is_an_api_error_after_the_retries(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    stripe_events_api.fail_always(500)
    client = _client(stripe_sdk, stripe_events_api, max_network_retries=2)
    with pytest.raises(stripe.APIError):
        client.v1.events.list()
    assert (stripe_events_api.requests, stripe_events_api.pages) == (3, 0)
    stripe_events_api.clear_faults()
    stripe_events_api.reset_counters()
    assert client.v1.events.list().data == [] and stripe_events_api.pages == 1


def test_ten_thousand_events_page_fast(
    stripe_events_api: FakeStripeEventsAPI, stripe_sdk: StripeClientFactory
) -> None:
    # Paged over raw HTTP: the official SDK spends ~1 ms an event turning JSON into
    # StripeObjects (~11 s for these 10,000), which is the SDK's cost, not the fake's.
    added = _fill(stripe_events_api, 10_000, step=3)
    started = time.monotonic()
    seen: list[str] = []
    cursor = ""
    while True:
        status, page = _raw(stripe_events_api, f"limit=100&created[gte]={T0}{cursor}")
        assert status == 200
        seen += _ids(page["data"])
        if not page["has_more"]:
            break
        cursor = f"&starting_after={seen[-1]}"
    elapsed = time.monotonic() - started
    assert seen == _ids(added)[::-1] and stripe_events_api.pages == 100
    assert elapsed < 10, f"{elapsed:.1f}s to page 10,000 events"
    client = _client(stripe_sdk, stripe_events_api)
    params: Any = {"limit": 100, "starting_after": seen[4999], "created": {"lte": T0 + 30_000}}
    page = client.v1.events.list(params=params)
    assert [e.id for e in page.data] == seen[5000:5100] and page.has_more

"""The localstripe fixture: payments through the official SDK, its event list, signed webhooks,
and the quirks `fakes/localstripe_process.py` documents."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import stripe

from payments_pipeline.providers.stripe import verify_signature

from ..fakes.localstripe_process import LocalStripe
from ..fakes.webhook_sink import WebhookSink

WEBHOOK_SECRET = "whsec_localstripe_test_0123456789"
PICKLE = Path("/tmp/localstripe.pickle")


def test_two_payments_list_as_succeeded_events_through_the_sdk(localstripe: LocalStripe) -> None:
    first = localstripe.pay(1000, "eur")
    second = localstripe.pay(2500, "usd")
    events = localstripe.events()
    assert [(e.type, e.data.object.id) for e in events] == [
        ("payment_intent.succeeded", first),  # oldest first: localstripe's order
        ("payment_intent.succeeded", second),
    ]
    event = events[1].to_dict()
    assert set(event) == {"api_version", "created", "data", "id", "livemode", "object", "type"}
    assert (event["api_version"], event["object"], event["livemode"]) == (
        "2017-08-15",
        "event",
        False,
    )
    assert event["id"].startswith("evt_") and abs(event["created"] - time.time()) < 60
    intent = event["data"]["object"]
    assert (intent["amount"], intent["currency"], intent["status"]) == (2500, "usd", "succeeded")
    assert "amount_received" not in intent  # a quirk: real Stripe sends it
    assert intent["latest_charge"]["object"] == "charge"  # a quirk: real Stripe sends the id
    assert localstripe.sdk.v1.payment_intents.retrieve(second).status == "succeeded"


def test_a_declined_card_emits_payment_failed(localstripe: LocalStripe) -> None:
    declined = localstripe.pay(700, "eur", decline=True)
    [event] = localstripe.events()
    assert (event.type, event.data.object.id) == ("payment_intent.payment_failed", declined)
    intent = event.to_dict()["data"]["object"]
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == "card_declined"
    assert localstripe.sdk.v1.payment_intents.retrieve(declined).status == (
        "requires_payment_method"
    )


def test_the_event_list_filters_and_quirks(localstripe: LocalStripe) -> None:
    paid = [localstripe.pay(100 + i, "eur") for i in range(3)]
    failed = localstripe.pay(900, "eur", decline=True)
    every = localstripe.events()
    assert [e.data.object.id for e in every] == [*paid, failed]
    succeeded = localstripe.events(type="payment_intent.succeeded")
    assert [e.data.object.id for e in succeeded] == paid
    created = every[0].created
    assert len(localstripe.events(created={"gte": created, "lte": created + 60})) == 4
    assert localstripe.events(created={"gt": created + 60}) == []
    # pages of 1, as the SDK's auto-paging asks them (starting_after = the last id of a page)
    assert [e.id for e in localstripe.events(limit=1)] == [e.id for e in every]
    with pytest.raises(stripe.InvalidRequestError, match="Unexpected types"):
        localstripe.sdk.v1.events.list(params={"types": ["payment_intent.succeeded"]})
    # an unknown starting_after restarts from the oldest; any sk_ key is accepted
    restart = localstripe.sdk.v1.events.list(params={"starting_after": "evt_unknown", "limit": 1})
    assert [e.id for e in restart.data] == [every[0].id]
    other_key = localstripe.client("sk_test_anything_else").v1.events.list()
    assert len(other_key.data) == 4
    with pytest.raises(stripe.AuthenticationError):
        localstripe.client("pk_test_publishable").v1.events.list()


def test_webhooks_arrive_signed(localstripe: LocalStripe, webhook_sink: WebhookSink) -> None:
    localstripe.register_webhook(webhook_sink.url, WEBHOOK_SECRET)
    paid = localstripe.pay(1200, "eur")
    [delivery] = webhook_sink.wait_for(1)
    signature = delivery.headers["Stripe-Signature"]
    verify_signature(delivery.body, signature, [WEBHOOK_SECRET])  # our receiver's check
    event = stripe.Webhook.construct_event(delivery.body, signature, WEBHOOK_SECRET)
    assert (event.type, event.data.object.id) == ("payment_intent.succeeded", paid)
    assert signature.startswith(f"t={event.created},v1=")  # signed at the event's created
    assert delivery.path == "/webhooks/stripe"
    assert json.loads(delivery.body)["id"] == localstripe.events()[0].id
    time.sleep(1.5)
    assert len(webhook_sink.deliveries) == 1  # once: no retry, no other event


def test_webhooks_filtered_by_type_and_not_retried(
    localstripe: LocalStripe, webhook_sink: WebhookSink
) -> None:
    webhook_sink.status = 500  # an endpoint that is down
    localstripe.register_webhook(
        webhook_sink.url, WEBHOOK_SECRET, events=["payment_intent.payment_failed"]
    )
    localstripe.pay(100, "eur")
    failed = localstripe.pay(200, "eur", decline=True)
    [delivery] = webhook_sink.wait_for(1)
    assert json.loads(delivery.body)["data"]["object"]["id"] == failed
    time.sleep(1.5)
    assert len(webhook_sink.deliveries) == 1


def test_each_server_has_its_own_store_and_none_on_disk(
    localstripe: LocalStripe, tmp_path: Path
) -> None:
    before = PICKLE.stat().st_mtime_ns if PICKLE.exists() else None
    localstripe.pay(100, "eur")
    with LocalStripe(log=tmp_path / "second.log") as second:
        assert second.events() == []
        second.pay(300, "eur")
        assert len(second.events()) == 1
    assert len(localstripe.events()) == 1
    assert (PICKLE.stat().st_mtime_ns if PICKLE.exists() else None) == before


def test_the_server_stops_by_itself_and_by_pid(tmp_path: Path) -> None:
    server = LocalStripe(log=tmp_path / "short.log", max_seconds=1)
    server.start()
    process = server.process
    assert process is not None
    assert process.wait(timeout=10) == 0  # max_seconds passed: it exited on its own
    server.stop()
    with LocalStripe(log=tmp_path / "stopped.log") as stopped:
        assert stopped.process is not None
        pid = stopped.process.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped

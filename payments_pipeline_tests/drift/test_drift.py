"""`stripe_drift` for one UTC day: Stripe's side from our fake PaymentIntents and Charges API, our
`payments` rows made by signed webhooks POSTed to a running receiver with the events the fake gives
for its own objects. A day that matches, a payment that never reached us and the drift clearing
once it does, a refund made at Stripe and never delivered, another day's payment, each final
status, legacy charges, currency and livemode, paging with one query a page, the API's errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.drift import KINDS, Difference, DriftReport, day_bounds, stripe_drift
from payments_pipeline.models import PaymentFacts, PaymentStatus, Provider, utcnow
from payments_pipeline.providers.stripe_api import StripeApi, StripeApiError, StripePayments

from ..fakes.stripe_payments_api import FakeStripePaymentsAPI
from ..helpers import payment_rows
from .support import DAY, T0, T_END, Receiver, drift, payments_selects

SUCCEEDED = "payment_intent.succeeded"


def _paid(api: FakeStripePaymentsAPI, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    """A succeeded PaymentIntent of the day whose payment_intent.succeeded reached us."""
    pi = api.add_payment_intent(**{"created": T0 + 3600, "amount": 1000, **fields})
    receiver.deliver_of(api, pi, SUCCEEDED)
    return pi


def _no_difference(report: DriftReport) -> None:
    assert report.differences == (), report.render_text()
    assert report.drifted == 0 and report.by_kind == dict.fromkeys(KINDS, 0)


# --- a day that matches --------------------------------------------------------------------------


def test_a_day_that_matches_compares_every_payment_and_counts_those_in_flight(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    api = stripe_payments_api
    paid = [_paid(api, receiver, created=T0 + 600 * i, amount=1000 + i) for i in range(4)]
    usd = _paid(api, receiver, created=T_END, amount=2500, currency="usd")
    # in flight at Stripe: no handled event has reported them; not compared
    waiting = api.add_payment_intent(created=T0 + 30, amount=700, status="requires_payment_method")
    processing = api.add_payment_intent(created=T0 + 40, amount=800, status="processing")
    assert waiting["last_payment_error"] is None and processing["latest_charge"] is not None

    report = drift(engine, api)

    assert (report.day, report.compared, report.in_flight) == (DAY, 5, 2)
    _no_difference(report)
    # one page of PaymentIntents, one of charges (all of them a PaymentIntent's: not compared)
    assert report.pages == 2
    assert api.paths == Counter({"/v1/payment_intents": 1, "/v1/charges": 1})
    intents, charges = api.queries
    assert (intents["created[gte]"], intents["created[lte]"]) == (str(T0), str(T_END))
    assert intents["expand[0]"] == "data.latest_charge" and intents["limit"] == "100"
    assert (charges["created[gte]"], charges["created[lte]"]) == (str(T0), str(T_END))
    rows = payment_rows(engine)
    assert set(rows) == {p["id"] for p in [*paid, usd]}  # nothing of ours for those in flight
    assert rows[usd["id"]] == (PaymentStatus.SUCCEEDED, 2500, 2500, 0, "usd", False)
    assert report.as_json() == {
        "date": "2026-12-05",
        "compared": 5,
        "in_flight": 2,
        "by_kind": {},
        "differences": [],
    }
    assert report.render_text().splitlines() == [
        "Drift on 2026-12-05 (UTC): 5 Stripe payments compared with ours "
        "(2 still in flight at Stripe, not compared)",
        "No difference: our payments say what Stripe says.",
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_empty_day_compares_nothing(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI
) -> None:
    stripe_payments_api.add_payment_intent(created=T0 - 1, amount=100)  # the day before
    report = drift(engine, stripe_payments_api)
    assert (report.compared, report.in_flight, report.pages) == (0, 0, 2)
    _no_difference(report)


# --- a payment that never reached us -------------------------------------------------------------


def test_a_payment_whose_events_never_reached_us_is_missing_here_until_delivered(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    api = stripe_payments_api
    held = _paid(api, receiver, created=T0 + 10)
    lost = api.add_payment_intent(created=T0 + 20, amount=4200)
    lost_failure = api.add_payment_intent(
        created=T0 + 30, amount=900, status="requires_payment_method", failed=True
    )

    report = drift(engine, api)

    assert report.compared == 3
    expected = [
        Difference(lost["id"], "missing_here", "", "succeeded"),
        Difference(lost_failure["id"], "missing_here", "", "failed"),
    ]
    assert list(report.differences) == sorted(expected, key=lambda d: d.reference)
    assert report.drifted == 2
    assert report.by_kind == {**dict.fromkeys(KINDS, 0), "missing_here": 2}
    assert report.as_json()["by_kind"] == {"missing_here": 2}
    assert held["id"] not in {d.reference for d in report.differences}

    # the missed events arrive (a reconciliation, or Stripe's retry): the same call finds nothing
    receiver.deliver_of(api, lost, SUCCEEDED)
    receiver.deliver_of(api, lost_failure, "payment_intent.payment_failed")
    again = drift(engine, api)
    assert again.compared == 3
    _no_difference(again)
    assert payment_rows(engine)[lost["id"]] == (
        PaymentStatus.SUCCEEDED,
        4200,
        4200,
        0,
        "eur",
        False,
    )


# --- a refund made at Stripe ---------------------------------------------------------------------


def test_a_refund_made_at_stripe_and_never_delivered_drifts_until_charge_refunded_arrives(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    api = stripe_payments_api
    pi = _paid(api, receiver, amount=5000)
    _no_difference(drift(engine, api))

    api.refund(pi["id"], 1200)  # in the dashboard; its webhook was filtered out
    partial = drift(engine, api)
    assert partial.differences == (
        Difference(pi["id"], "status", "succeeded", "partially_refunded"),
        Difference(pi["id"], "amount_refunded", "0", "1200"),
    )
    assert (partial.compared, partial.drifted) == (1, 1)
    assert partial.as_json()["by_kind"] == {"status": 1, "amount_refunded": 1}

    receiver.deliver_of(api, pi["id"], "charge.refunded", created=T0 + 7200)
    _no_difference(drift(engine, api))
    assert payment_rows(engine)[pi["id"]] == (
        PaymentStatus.PARTIALLY_REFUNDED,
        5000,
        5000,
        1200,
        "eur",
        False,
    )

    api.refund(pi["id"])  # the rest: the charge is refunded whole
    whole = drift(engine, api)
    assert whole.differences == (
        Difference(pi["id"], "status", "partially_refunded", "refunded"),
        Difference(pi["id"], "amount_refunded", "1200", "5000"),
    )
    receiver.deliver_of(api, pi["id"], "charge.refunded", created=T0 + 9000)
    _no_difference(drift(engine, api))
    assert payment_rows(engine)[pi["id"]][0] is PaymentStatus.REFUNDED


def test_a_whole_refund_never_delivered_says_refunded(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    api = stripe_payments_api
    pi = _paid(api, receiver, amount=800)
    api.refund(pi["id"])
    assert drift(engine, api).differences == (
        Difference(pi["id"], "status", "succeeded", "refunded"),
        Difference(pi["id"], "amount_refunded", "0", "800"),
    )
    receiver.deliver_of(api, pi["id"], "charge.refunded", created=T0 + 7200)
    _no_difference(drift(engine, api))


# --- another day's payment -----------------------------------------------------------------------


def test_a_payment_created_on_another_day_is_never_this_days_drift(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    """Our rows are all created today (the receiver writes them now), whatever day Stripe says
    the payment was created: only the references Stripe lists for the day are compared."""
    api = stripe_payments_api
    today = utcnow().date()
    yesterday = today - dt.timedelta(days=1)
    start, end = day_bounds(today)
    _, y_end = day_bounds(yesterday)
    mine = api.add_payment_intent(created=start + 1, amount=100)
    receiver.deliver_of(api, mine, SUCCEEDED)
    # yesterday's payment (its charge made today), delivered today, then refunded at Stripe
    # without an event: today's charges list its charge, which is its PaymentIntent's
    old = api.add_payment_intent(created=y_end, amount=300, charge_created=start + 5)
    receiver.deliver_of(api, old, SUCCEEDED)
    api.refund(old["id"], 100)
    # the edges of today: the first and last second in; the second before and after are not
    first = api.add_payment_intent(created=start, amount=10)
    last = api.add_payment_intent(created=end, amount=20)
    receiver.deliver_of(api, first, SUCCEEDED)
    receiver.deliver_of(api, last, SUCCEEDED)
    api.add_payment_intent(created=end + 1, amount=30)  # tomorrow's, never delivered
    with engine.connect() as conn:
        ours = {p.reference: p for p in store.list_payments(conn)}
    if utcnow().date() != today:
        pytest.skip("the UTC day changed during the test")
    assert {p.created_at.date() for p in ours.values()} == {today}

    report = drift(engine, api, today)
    assert (report.compared, report.in_flight) == (3, 0)
    _no_difference(report)  # neither yesterday's refund nor tomorrow's missing payment

    on_its_day = drift(engine, api, yesterday)
    assert on_its_day.compared == 1
    assert on_its_day.differences == (
        Difference(old["id"], "status", "succeeded", "partially_refunded"),
        Difference(old["id"], "amount_refunded", "0", "100"),
    )
    tomorrow = drift(engine, api, today + dt.timedelta(days=1))
    assert [(d.kind, d.stripe) for d in tomorrow.differences] == [("missing_here", "succeeded")]


# --- each status --------------------------------------------------------------------------------


def _failed(api: FakeStripePaymentsAPI, receiver: Receiver) -> str:
    pi = api.add_payment_intent(
        created=T0 + 5, amount=900, status="requires_payment_method", failed=True
    )
    receiver.deliver_of(api, pi, "payment_intent.payment_failed")
    return str(pi["id"])


def _canceled(api: FakeStripePaymentsAPI, receiver: Receiver) -> str:
    pi = api.add_payment_intent(created=T0 + 5, amount=900, status="canceled")
    receiver.deliver_of(api, pi, "payment_intent.canceled")
    return str(pi["id"])


def _canceled_after_a_decline(api: FakeStripePaymentsAPI, receiver: Receiver) -> str:
    pi = api.add_payment_intent(created=T0 + 5, amount=900, status="canceled", failed=True)
    receiver.deliver_of(api, pi, "payment_intent.payment_failed")
    receiver.deliver_of(api, pi, "payment_intent.canceled", created=T0 + 50)
    return str(pi["id"])


def _legacy(api: FakeStripePaymentsAPI, receiver: Receiver) -> str:
    charge = api.add_charge(created=T0 + 5, amount=900, currency="usd")
    receiver.deliver_of(api, charge, "charge.succeeded")
    return str(charge["id"])


def _legacy_refunded(api: FakeStripePaymentsAPI, receiver: Receiver) -> str:
    charge = api.add_charge(created=T0 + 5, amount=900)
    receiver.deliver_of(api, charge, "charge.succeeded")
    api.refund(charge["id"], 400)
    receiver.deliver_of(api, charge, "charge.refunded", created=T0 + 60)
    return str(charge["id"])


@pytest.mark.parametrize(
    ("make", "row"),
    [
        (_failed, (PaymentStatus.FAILED, 900, 0, 0, "eur", False)),
        (_canceled, (PaymentStatus.CANCELLED, 900, 0, 0, "eur", False)),
        (_canceled_after_a_decline, (PaymentStatus.CANCELLED, 900, 0, 0, "eur", False)),
        (_legacy, (PaymentStatus.SUCCEEDED, 900, 900, 0, "usd", False)),
        (_legacy_refunded, (PaymentStatus.PARTIALLY_REFUNDED, 900, 900, 400, "eur", False)),
    ],
    ids=["failed", "canceled", "canceled_after_a_decline", "legacy_charge", "legacy_refunded"],
)
def test_each_final_status_at_stripe_matches_what_its_events_left_in_our_row(
    engine: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    make: Any,
    row: tuple[Any, ...],
) -> None:
    reference = make(stripe_payments_api, receiver)
    assert payment_rows(engine) == {reference: row}
    report = drift(engine, stripe_payments_api)
    assert (report.compared, report.in_flight) == (1, 0)
    _no_difference(report)


def test_legacy_charges_are_compared_under_their_charge_id(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    api = stripe_payments_api
    held = api.add_charge(created=T0 + 5, amount=600)
    receiver.deliver_of(api, held, "charge.succeeded")
    lost = api.add_charge(created=T0 + 6, amount=700)
    api.add_charge(created=T0 + 7, amount=800, status="failed")  # no handler records it
    api.add_charge(created=T0 + 8, amount=900, status="pending")
    api.refund(held["id"], 100)  # at Stripe, not delivered

    report = drift(engine, api)

    assert (report.compared, report.in_flight) == (2, 0)  # a charge is never "in flight"
    assert held["id"].startswith("ch_") and lost["id"].startswith("ch_")
    expected = [
        Difference(held["id"], "status", "succeeded", "partially_refunded"),
        Difference(held["id"], "amount_refunded", "0", "100"),
        Difference(lost["id"], "missing_here", "", "succeeded"),
    ]
    assert list(report.differences) == sorted(expected, key=lambda d: d.reference)


# --- currency, livemode and amounts --------------------------------------------------------------


def test_currency_livemode_and_amount_differences(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    """currency: our row made by a delivered event whose object we altered (what a proxy
    rewriting the payload, or an event of another payment under this id, would leave).
    livemode and amount_received: the row written directly with the store after a correct event
    (a handler bug), since no event of a test-mode PaymentIntent can carry them."""
    api = stripe_payments_api
    in_usd = api.add_payment_intent(created=T0 + 1, amount=1000)
    event = api.event_for(in_usd, SUCCEEDED)
    event["data"]["object"]["currency"] = "usd"
    receiver.deliver(event)

    live = _paid(api, receiver, created=T0 + 2, amount=2000)
    short = _paid(api, receiver, created=T0 + 3, amount=3000)
    _rewrite(engine, live["id"], livemode=True)
    _rewrite(engine, short["id"], amount_received=2999)

    report = drift(engine, api)

    assert report.compared == 3 and report.drifted == 3
    assert sorted(report.differences, key=lambda d: d.reference) == list(report.differences)
    assert set(report.differences) == {
        Difference(in_usd["id"], "currency", "usd", "eur"),
        Difference(live["id"], "livemode", "true", "false"),
        Difference(short["id"], "amount_received", "2999", "3000"),
    }
    assert report.as_json()["by_kind"] == {"amount_received": 1, "currency": 1, "livemode": 1}


def test_every_kind_of_one_payment_in_kind_order(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    """One row wrong in every column: one difference per kind, in KINDS' order."""
    api = stripe_payments_api
    pi = _paid(api, receiver, created=T0 + 1, amount=1000)
    api.refund(pi["id"], 250)
    _rewrite(
        engine,
        pi["id"],
        status=PaymentStatus.FAILED,
        amount_received=0,
        currency="gbp",
        livemode=True,
    )
    report = drift(engine, api)
    assert report.differences == (
        Difference(pi["id"], "status", "failed", "partially_refunded"),
        Difference(pi["id"], "amount_received", "0", "1000"),
        Difference(pi["id"], "amount_refunded", "0", "250"),
        Difference(pi["id"], "currency", "gbp", "eur"),
        Difference(pi["id"], "livemode", "true", "false"),
    )
    assert report.drifted == 1


def test_differences_beside_missing_rows_keep_their_texts(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    """A missing row on the same day leaves holes in our side of the join: the texts of the
    others stay whole numbers and true/false."""
    api = stripe_payments_api
    api.add_payment_intent(created=T0 + 1, amount=100)  # never delivered
    pi = _paid(api, receiver, created=T0 + 2, amount=1000)
    api.refund(pi["id"], 250)
    _rewrite(engine, pi["id"], livemode=True)
    kinds = {d.kind: d for d in drift(engine, api).differences}
    assert set(kinds) == {"missing_here", "status", "amount_refunded", "livemode"}
    assert (kinds["amount_refunded"].ours, kinds["amount_refunded"].stripe) == ("0", "250")
    assert (kinds["livemode"].ours, kinds["livemode"].stripe) == ("true", "false")


def _rewrite(engine: Engine, reference: str, **changes: Any) -> None:
    """Our row of `reference` as a buggy handler would leave it (the store's compare-and-set)."""
    with engine.begin() as conn:
        seen = store.get_payment(conn, provider=Provider.STRIPE, reference=reference)
        assert seen is not None
        facts = dataclasses.replace(PaymentFacts.of(seen), **changes)
        assert store.update_payment_if_unchanged(
            conn, seen=seen, facts=facts, event_id=seen.last_event_id or 0, now=utcnow()
        )


# --- paging --------------------------------------------------------------------------------------


def test_a_day_of_many_pages_reads_our_rows_one_query_a_page(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    api = stripe_payments_api
    intents = [api.add_payment_intent(created=T0 + 60 * i, amount=100 + i) for i in range(230)]
    delivered = [pi for i, pi in enumerate(intents) if i % 3]
    for pi in delivered:
        receiver.deliver_of(api, pi, SUCCEEDED)
    legacy = api.add_charge(created=T_END, amount=50)  # the newest charge: on the first page
    receiver.deliver_of(api, legacy, "charge.succeeded")
    api.reset_counters()

    with payments_selects(engine) as selects:
        report = drift(engine, api)

    assert api.paths == Counter({"/v1/payment_intents": 3, "/v1/charges": 3})
    assert report.pages == 6 and report.compared == 231
    # a page of PaymentIntents is one query; a page of charges that are all PaymentIntents'
    # has nothing of its own to compare and asks nothing
    assert len(selects) == 4
    assert [q.get("starting_after") for q in api.queries[:3]] == [
        None,
        intents[-100]["id"],
        intents[-200]["id"],
    ]
    missing = sorted(pi["id"] for i, pi in enumerate(intents) if i % 3 == 0)
    assert [d.reference for d in report.differences] == missing
    assert {d.kind for d in report.differences} == {"missing_here"}
    assert report.by_kind["missing_here"] == 77


# --- the API's errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_refused_key_raises_naming_no_key(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI
) -> None:
    stripe_payments_api.add_payment_intent(created=T0 + 1, amount=100)
    wrong = "sk_test_wrong_drift_key_000000009876"
    with pytest.raises(StripeApiError) as raised:
        drift(engine, stripe_payments_api, key=wrong)
    assert str(raised.value) == (
        f"Stripe's API refused STRIPE_API_KEY at {stripe_payments_api.url} (HTTP 401): "
        "check the key"
    )
    assert wrong not in str(raised.value)
    assert stripe_payments_api.statuses == Counter({401: 1})


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_500_after_the_sdks_retries_raises(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, sdk_retries: list[int]
) -> None:
    stripe_payments_api.add_payment_intent(created=T0 + 1, amount=100)
    stripe_payments_api.fail_always(500)
    with pytest.raises(StripeApiError) as raised:
        drift(engine, stripe_payments_api)
    assert str(raised.value) == (
        f"Stripe's API answered HTTP 500 at {stripe_payments_api.url} after 3 retries: "
        "try again later"
    )
    assert stripe_payments_api.statuses == Counter({500: 4}) and sdk_retries == [1, 2, 3]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_500_on_a_later_page_raises_and_no_partial_report(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, sdk_retries: list[int]
) -> None:
    api = stripe_payments_api
    for i in range(150):
        api.add_payment_intent(created=T0 + i, amount=100)

    class FailingAfterOnePage(StripePayments):
        def payment_intents(self, **window: int) -> Iterator[list[dict[str, Any]]]:
            for n, page in enumerate(super().payment_intents(**window)):
                yield page
                if n == 0:
                    api.fail_always(500)

    with StripeApi(api.api_key, api.url) as client, pytest.raises(StripeApiError, match="500"):
        stripe_drift(engine, FailingAfterOnePage(client), DAY)
    assert api.statuses == Counter({200: 1, 500: 4})


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_transient_500_is_retried_and_the_day_is_compared(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, sdk_retries: list[int]
) -> None:
    stripe_payments_api.add_payment_intent(created=T0 + 1, amount=100)
    stripe_payments_api.fail_next(500, times=2)
    report = drift(engine, stripe_payments_api)
    assert [d.kind for d in report.differences] == ["missing_here"]
    assert sdk_retries == [1, 2]


def test_the_drift_only_reads(
    engine: Engine, stripe_payments_api: FakeStripePaymentsAPI, receiver: Receiver
) -> None:
    """The drift only reads: no row of ours changes, whatever it finds."""
    api = stripe_payments_api
    pi = _paid(api, receiver)
    api.refund(pi["id"], 10)
    api.add_payment_intent(created=T0 + 9, amount=5)
    before = payment_rows(engine)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        assert drift(engine, api).drifted == 2
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert payment_rows(engine) == before
    writes = ("INSERT", "UPDATE", "DELETE")
    assert statements and not [s for s in statements if s.upper().startswith(writes)], statements

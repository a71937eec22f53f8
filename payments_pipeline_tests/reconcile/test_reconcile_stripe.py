"""`reconcile_stripe` and `payments-pipeline reconcile stripe|monetbil` against our fake Stripe
Events API (and the fake checkPayment): paging, what is known and what is recovered, the audit,
types, dry runs, the API's faults, and the command's own error paths (one `error:` line, the exit
code, nothing written, the key never shown); a missing or refused key, an API that does not
answer or answers 500, for this command and `drift stripe`, are in
`providers/test_stripe_api.py`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.models import (
    MISSED_DELIVERY,
    PaymentStatus,
    Provider,
    ReceivedVia,
    SweepOutcome,
)
from payments_pipeline.providers.stripe import HANDLED_EVENT_TYPES
from payments_pipeline.providers.stripe_api import StripeApi, StripeEvents
from payments_pipeline.reconcile import (
    ProviderUnavailable,
    ReconcileError,
    StripeReconciliation,
    Window,
    reconcile_stripe,
    stripe_window,
)

from ..doors import closed_port_url, run_cli, run_installed, stripe_env_of, url_of
from ..fakes.monetbil_check_api import FakeCheckPayment
from ..fakes.stripe_events_api import FakeStripeEventsAPI
from ..helpers import RecordingDispatcher, make_settings, payment_rows, receive_and_dispatch

NOW = dt.datetime(2026, 12, 7, 12, 0, 0)
WINDOW = Window(NOW - dt.timedelta(hours=3), NOW)
T0 = WINDOW.created_gte  # events are created from here, every 30 s: 250 of them fit in 3 hours
pytestmark = pytest.mark.usefixtures("clean_door_env")


# --- helpers -------------------------------------------------------------------------------------


def _fill(
    api: FakeStripeEventsAPI, count: int, *, failed_every: int = 5, delivered: bool = False
) -> list[dict[str, Any]]:
    """`count` events, one PaymentIntent each (every `failed_every`th a payment_failed), created
    T0, T0+30, ...; returned as the API lists them (newest first)."""
    for i in range(count):
        kind = (
            "payment_intent.payment_failed" if i % failed_every == 0 else "payment_intent.succeeded"
        )
        api.add_event(
            kind,
            created=T0 + 30 * i,
            delivered=delivered,
            reference=f"pi_{i:04d}",
            amount=1000 + i,
        )
    return api.events


def _deliver(engine: Engine, event: dict[str, Any]) -> None:
    """`event` as the receiver takes in a delivery (and processes it inline)."""
    receive_and_dispatch(
        engine,
        InlineDispatcher(engine, make_settings(engine)),
        provider=Provider.STRIPE,
        provider_event_id=event["id"],
        event_type=event["type"],
        payload=json.dumps(event, separators=(",", ":")),
        minutes=10,
    )


@contextmanager
def _api(
    fake: FakeStripeEventsAPI, *, key: str | None = None, **options: Any
) -> Iterator[StripeApi]:
    with StripeApi(key or fake.api_key, fake.url, **options) as api:
        yield api


def _reconcile(
    engine: Engine,
    fake: FakeStripeEventsAPI,
    *,
    dispatcher: Any = None,
    window: Window = WINDOW,
    api_options: dict[str, Any] | None = None,
    **options: Any,
) -> StripeReconciliation:
    with _api(fake, **(api_options or {})) as api:
        return reconcile_stripe(
            engine,
            StripeEvents(api),
            dispatcher or InlineDispatcher(engine, make_settings(engine)),
            window=window,
            minutes=10,
            **options,
        )


def _events(engine: Engine) -> dict[str, sa.Row[Any]]:
    """Every webhook_events row (all columns), by provider event id."""
    with engine.connect() as conn:
        return {r.provider_event_id: r for r in conn.execute(sa.select(store.webhook_events))}


def _sweep_runs(engine: Engine) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.sweep_runs).order_by(store.sweep_runs.c.id)))


def _sweep_events(engine: Engine, sweep_id: int) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(store.sweep_events).where(store.sweep_events.c.sweep_id == sweep_id)
            )
        )


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _nothing_written(engine: Engine) -> None:
    for table in (store.webhook_events, store.sweep_runs, store.sweep_events, store.payments):
        assert _count(engine, table) == 0, table.name


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement `engine` sends while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _known_checks(statements: list[str]) -> list[str]:
    """The statements that ask which of a batch of provider ids we hold."""
    return [
        s
        for s in statements
        if s.startswith("SELECT") and "FROM webhook_events" in s and "provider_event_id IN" in s
    ]


def _expected_payment(event: dict[str, Any]) -> tuple[Any, ...]:
    obj = event["data"]["object"]
    succeeded = event["type"] == "payment_intent.succeeded"
    status = PaymentStatus.SUCCEEDED if succeeded else PaymentStatus.FAILED
    return (status, obj["amount"], obj["amount"] if succeeded else 0, 0, "eur", False)


# --- the core ------------------------------------------------------------------------------------


def test_recovers_what_we_lack_over_several_pages_newest_first(
    engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    listed = _fill(stripe_events_api, 250)
    held = listed[::4]  # 63 of them reached the receiver
    for event in held:
        _deliver(engine, event)
        stripe_events_api.mark_delivered(event["id"])
    held_ids = {e["id"] for e in held}
    before = _events(engine)
    assert len(before) == 63

    with _statements(engine) as statements:
        result = _reconcile(engine, stripe_events_api)

    missed = [e for e in listed if e["id"] not in held_ids]
    assert (result.pages, result.listed, result.known, len(result.recovered)) == (3, 250, 63, 187)
    assert (stripe_events_api.pages, stripe_events_api.requests) == (3, 3)
    assert result.recovered_by_type == dict(Counter(e["type"] for e in missed))
    assert result.listed_by_type == dict(Counter(e["type"] for e in listed))
    assert result.known_by_type == dict(Counter(e["type"] for e in held))
    assert result.other_types == 0
    # newest first: the recovered events come in the order the API listed them
    assert [r.provider_event_id for r in result.recovered] == [e["id"] for e in missed]
    assert {r.outcome for r in result.recovered} == {SweepOutcome.DISPATCHED}
    # the known check is one query a page, not one an event
    assert len(_known_checks(statements)) == 3

    rows = _events(engine)
    assert len(rows) == 250
    for event in missed:
        row = rows[event["id"]]
        assert (row.received_via, row.status, row.event_type) == (
            ReceivedVia.API.value,
            "processed",
            event["type"],
        )
        assert json.loads(row.payload) == event  # the event JSON as the API returned it
    for event_id in held_ids:
        assert rows[event_id] == before[event_id]  # the delivered ones are untouched
        assert rows[event_id].received_via == ReceivedVia.WEBHOOK.value
    assert payment_rows(engine) == {e["data"]["object"]["id"]: _expected_payment(e) for e in listed}

    (run,) = _sweep_runs(engine)
    assert run.id == result.sweep_id
    assert (run.kind, run.provider, run.trigger, run.status, run.error) == (
        "reconcile",
        "stripe",
        "cli",
        "succeeded",
        None,
    )
    assert (run.window_start, run.window_end) == (WINDOW.since, WINDOW.until)
    assert (run.scanned, run.dispatched, run.skipped, run.expired) == (250, 187, 63, 0)
    assert run.finished_at is not None
    audited = _sweep_events(engine, run.id)
    assert {(a.event_id, a.reason, a.outcome) for a in audited} == {
        (rows[e["id"]].id, MISSED_DELIVERY, "dispatched") for e in missed
    }
    assert len(audited) == 187


def test_a_second_run_over_the_same_window_recovers_and_changes_nothing(
    engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    _fill(stripe_events_api, 150)
    first = _reconcile(engine, stripe_events_api)
    assert len(first.recovered) == 150
    events, payments = _events(engine), payment_rows(engine)
    ledger = _count(engine, store.payment_ledger)
    stripe_events_api.reset_counters()

    dispatcher = RecordingDispatcher()
    with _statements(engine) as statements:
        second = _reconcile(engine, stripe_events_api, dispatcher=dispatcher)

    assert (second.pages, second.listed, second.known, second.recovered) == (2, 150, 150, ())
    assert dispatcher.events == []
    # each page is answered by one query; nothing else touches the events
    assert [s for s in statements if "webhook_events" in s] == _known_checks(statements)
    assert len(_known_checks(statements)) == stripe_events_api.pages == 2
    assert _events(engine) == events
    assert payment_rows(engine) == payments
    assert _count(engine, store.payment_ledger) == ledger
    runs = _sweep_runs(engine)
    assert [r.id for r in runs] == [first.sweep_id, second.sweep_id]
    assert (runs[1].status, runs[1].scanned, runs[1].dispatched, runs[1].skipped) == (
        "succeeded",
        150,
        0,
        150,
    )
    assert (runs[1].window_start, runs[1].window_end) == (WINDOW.since, WINDOW.until)
    assert _sweep_events(engine, runs[1].id) == []
    assert "Every listed event had reached us: nothing was missed." in second.render_text()


def test_events_stripe_says_were_delivered_are_recovered_when_we_lack_them(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    delivered = _fill(stripe_events_api, 4, delivered=True)  # Stripe: delivery_success
    assert stripe_events_api.undelivered_ids() == set()
    result = _reconcile(sqlite_engine, stripe_events_api)
    assert {r.provider_event_id for r in result.recovered} == {e["id"] for e in delivered}
    assert set(_events(sqlite_engine)) == {e["id"] for e in delivered}
    # the listing never asks Stripe to filter on what it thinks was delivered
    assert all("delivery_success" not in q for q in stripe_events_api.queries)


def test_events_outside_the_window_are_not_listed(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    inside = stripe_events_api.add_event(created=WINDOW.created_lte, delivered=False)
    edge = stripe_events_api.add_event(created=WINDOW.created_gte, delivered=False)
    stripe_events_api.add_event(created=WINDOW.created_gte - 1, delivered=False)
    stripe_events_api.add_event(created=WINDOW.created_lte + 1, delivered=False)
    result = _reconcile(sqlite_engine, stripe_events_api)
    assert [r.provider_event_id for r in result.recovered] == [inside["id"], edge["id"]]
    (query,) = stripe_events_api.queries
    assert (query["created[gte]"], query["created[lte]"], query["limit"]) == (
        str(WINDOW.created_gte),
        str(WINDOW.created_lte),
        "100",
    )


def test_default_types_are_the_handled_ones_and_types_narrow(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    handled = sorted(HANDLED_EVENT_TYPES)
    for i, kind in enumerate([*handled, "customer.created", "invoice.paid"]):
        stripe_events_api.add_event(kind, created=T0 + i, delivered=False)
    dispatcher = RecordingDispatcher()
    result = _reconcile(sqlite_engine, stripe_events_api, dispatcher=dispatcher)
    assert result.types == HANDLED_EVENT_TYPES
    assert result.recovered_by_type == dict.fromkeys(handled, 1)
    assert (result.listed, result.other_types) == (len(handled), 2)
    stored = {r.event_type for r in _events(sqlite_engine).values()}
    assert stored == set(handled)  # the others are not stored
    assert len(dispatcher.events) == len(handled)
    assert "; 2 of other types, left out" in result.render_text()


def test_types_narrow_what_is_taken_in(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    _fill(stripe_events_api, 10, failed_every=2)  # 5 failed, 5 succeeded
    result = _reconcile(
        sqlite_engine,
        stripe_events_api,
        dispatcher=RecordingDispatcher(),
        types=frozenset({"payment_intent.payment_failed"}),
    )
    assert result.recovered_by_type == {"payment_intent.payment_failed": 5}
    assert result.listed == 5
    assert {r.event_type for r in _events(sqlite_engine).values()} == {
        "payment_intent.payment_failed"
    }
    (run,) = _sweep_runs(sqlite_engine)
    assert (run.scanned, run.dispatched) == (5, 5)


def test_a_dry_run_writes_nothing_and_says_what_it_would_recover(
    engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    listed = _fill(stripe_events_api, 120)
    _deliver(engine, listed[0])
    before = _events(engine)
    dispatcher = RecordingDispatcher()
    result = _reconcile(engine, stripe_events_api, dispatcher=dispatcher, dry_run=True)
    assert (result.sweep_id, result.dry_run, result.pages) == (None, True, 2)
    assert (result.listed, result.known, len(result.recovered)) == (120, 1, 119)
    assert {r.outcome for r in result.recovered} == {SweepOutcome.WOULD_DISPATCH}
    assert all(r.event is None for r in result.recovered)
    assert dispatcher.events == []
    assert _events(engine) == before
    assert _sweep_runs(engine) == []
    assert _count(engine, store.sweep_events) == 0
    doc = result.as_json()
    assert doc["sweep_id"] is None and doc["dry_run"] is True and doc["recovered"] == 119
    assert {e["outcome"] for e in doc["events"]} == {"would_dispatch"}
    assert {e["id"] for e in doc["events"]} == {None}
    text = result.render_text()
    assert text.startswith("Dry run (nothing written): stripe events created")
    assert "Run again without --dry-run to take them in." in text


# --- the API's faults ----------------------------------------------------------------------------


def test_a_429_stripe_marks_retryable_is_retried_by_the_sdk(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI, sdk_retries: list[int]
) -> None:
    _fill(stripe_events_api, 3)
    stripe_events_api.fail_next(429, should_retry=True)
    ours: list[float] = []
    result = _reconcile(sqlite_engine, stripe_events_api, api_options={"sleep": ours.append})
    assert len(result.recovered) == 3
    assert stripe_events_api.statuses == Counter({429: 1, 200: 1})
    assert sdk_retries == [1] and ours == []  # the SDK retried, not us


def test_a_plain_429_is_retried_by_us_with_backoff(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI, sdk_retries: list[int]
) -> None:
    _fill(stripe_events_api, 3)
    stripe_events_api.fail_next(429, times=2)
    ours: list[float] = []
    result = _reconcile(sqlite_engine, stripe_events_api, api_options={"sleep": ours.append})
    assert len(result.recovered) == 3
    assert stripe_events_api.statuses == Counter({429: 2, 200: 1})
    assert sdk_retries == []  # a 429 without Stripe-Should-Retry: not the SDK's to retry
    assert len(ours) == 2
    assert 0.25 <= ours[0] <= 0.5 and 0.5 <= ours[1] <= 1.0  # exponential, jittered


def test_a_429_that_never_passes_gives_up_after_our_retries(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI, sdk_retries: list[int]
) -> None:
    _fill(stripe_events_api, 3)
    stripe_events_api.fail_always(429)
    ours: list[float] = []
    with pytest.raises(ProviderUnavailable, match=r"kept answering 429 .* after 5 retries"):
        _reconcile(sqlite_engine, stripe_events_api, api_options={"sleep": ours.append})
    assert len(ours) == 5 and stripe_events_api.requests == 6
    _nothing_written(sqlite_engine)


def test_a_500_on_the_first_page_after_the_retries_writes_nothing(
    engine: Engine, stripe_events_api: FakeStripeEventsAPI, sdk_retries: list[int]
) -> None:
    _fill(stripe_events_api, 3)
    stripe_events_api.fail_always(500)
    with pytest.raises(ProviderUnavailable) as raised:
        _reconcile(engine, stripe_events_api)
    assert str(raised.value) == (
        f"Stripe's API answered HTTP 500 at {stripe_events_api.url} after 3 retries: "
        "try again later"
    )
    assert stripe_events_api.statuses == Counter({500: 4}) and sdk_retries == [1, 2, 3]
    _nothing_written(engine)


def test_a_500_on_a_later_page_fails_the_audit_and_keeps_what_was_taken_in(
    engine: Engine, stripe_events_api: FakeStripeEventsAPI, sdk_retries: list[int]
) -> None:
    listed = _fill(stripe_events_api, 150)
    pages: list[Any] = []

    def after_page(page: Any) -> None:
        pages.append(page)
        stripe_events_api.fail_always(500)  # every request after the first page

    with pytest.raises(ProviderUnavailable, match="answered HTTP 500"):
        _reconcile(engine, stripe_events_api, on_page=after_page)
    assert [(p.number, p.listed, p.known, p.recovered) for p in pages] == [(1, 100, 0, 100)]
    rows = _events(engine)
    assert set(rows) == {e["id"] for e in listed[:100]}  # page 1 (the newest 100) is kept
    assert {r.status for r in rows.values()} == {"processed"}
    (run,) = _sweep_runs(engine)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == (
        f"Stripe's API answered HTTP 500 at {stripe_events_api.url} after 3 retries: "
        "try again later"
    )
    assert (run.scanned, run.dispatched, run.skipped) == (100, 100, 0)
    assert len(_sweep_events(engine, run.id)) == 100

    # once the API answers again, the next run takes in the rest
    stripe_events_api.clear_faults()
    again = _reconcile(engine, stripe_events_api)
    assert (again.known, len(again.recovered)) == (100, 50)


def test_a_refused_key_is_an_error_that_names_no_key(
    sqlite_engine: Engine, stripe_events_api: FakeStripeEventsAPI
) -> None:
    _fill(stripe_events_api, 3)
    wrong = "sk_test_wrong_key_0000000000001234"
    with pytest.raises(ProviderUnavailable) as raised:
        _reconcile(sqlite_engine, stripe_events_api, api_options={"key": wrong})
    assert str(raised.value) == (
        f"Stripe's API refused STRIPE_API_KEY at {stripe_events_api.url} (HTTP 401): check the key"
    )
    assert wrong not in str(raised.value) and stripe_events_api.statuses == Counter({401: 1})
    _nothing_written(sqlite_engine)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"since": NOW, "until": NOW - dt.timedelta(seconds=1)}, "is after until"),
        ({"since": NOW - dt.timedelta(days=31), "until": NOW}, "wider than 30 days"),
        ({"hours": 2, "since": NOW}, "give hours (--hours) or since (--since), not both"),
        ({"hours": 0}, "hours must be at least 1"),
    ],
)
def test_a_bad_window_is_refused_before_anything_is_asked(
    sqlite_engine: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    window: dict[str, Any],
    message: str,
) -> None:
    _fill(stripe_events_api, 3)
    with pytest.raises(ReconcileError, match=re.escape(message)):
        stripe_window(sqlite_engine, now=NOW, **window)
    assert stripe_events_api.requests == 0
    _nothing_written(sqlite_engine)


# --- the command ---------------------------------------------------------------------------------


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"


WINDOW_ARGS = ("--since", "2026-12-07T09:00:00Z", "--until", "2026-12-07T12:00:00Z")


def test_cli_json_prints_the_documented_shape(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listed = _fill(stripe_events_api, 110)
    _deliver(stripe_events_env, listed[5])
    stripe_events_api.add_event("customer.created", created=T0 + 1, delivered=False)
    code, out, err = run_cli(capsys, "reconcile", "stripe", *WINDOW_ARGS, "--json")
    assert code == 0, err
    doc = json.loads(out)
    (run,) = _sweep_runs(stripe_events_env)
    rows = _events(stripe_events_env)
    missed = [e for e in listed if e is not listed[5]]
    assert doc == {
        "sweep_id": run.id,
        "provider": "stripe",
        "since": "2026-12-07T09:00:00Z",
        "until": "2026-12-07T12:00:00Z",
        "dry_run": False,
        "pages": 2,
        "listed": 110,
        "known": 1,
        "recovered": 109,
        "by_type": dict(sorted(Counter(e["type"] for e in missed).items())),
        "other_types": 1,
        "events": [
            {
                "id": rows[e["id"]].id,
                "provider_event_id": e["id"],
                "event_type": e["type"],
                "created": _iso(dt.datetime(1970, 1, 1) + dt.timedelta(seconds=e["created"])),
                "outcome": "dispatched",
            }
            for e in missed
        ],
    }
    assert (run.trigger, run.window_start, run.window_end) == ("cli", WINDOW.since, WINDOW.until)


def test_cli_default_window_follows_on_from_the_last_run(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = int((dt.datetime.now(dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds())
    old = stripe_events_api.add_event(created=now - 71 * 3600, delivered=False)
    too_old = stripe_events_api.add_event(created=now - 73 * 3600, delivered=False)
    code, out, _ = run_cli(capsys, "reconcile", "stripe", "--json")
    assert code == 0
    first = json.loads(out)
    since = dt.datetime.fromisoformat(first["since"])
    until = dt.datetime.fromisoformat(first["until"])
    assert until - since == dt.timedelta(hours=72)
    assert [e["provider_event_id"] for e in first["events"]] == [old["id"]]
    assert too_old["id"] not in _events(stripe_events_env)
    code, out, _ = run_cli(capsys, "reconcile", "stripe", "--json")
    second = json.loads(out)
    assert dt.datetime.fromisoformat(second["since"]) == until - dt.timedelta(minutes=10)
    assert second["recovered"] == 0


def test_cli_dry_run_json_and_human_output(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listed = _fill(stripe_events_api, 5)
    code, out, _ = run_cli(capsys, "reconcile", "stripe", *WINDOW_ARGS, "--dry-run", "--json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["sweep_id"], doc["dry_run"], doc["recovered"]) == (None, True, 5)
    assert [e["outcome"] for e in doc["events"]] == ["would_dispatch"] * 5
    _nothing_written(stripe_events_env)

    code, out, _ = run_cli(capsys, "reconcile", "stripe", *WINDOW_ARGS, "--dry-run")
    assert code == 0
    first, last = listed[-1], listed[0]
    assert out.splitlines() == [
        "Dry run (nothing written): stripe events created 2026-12-07T09:00:00Z .. "
        "2026-12-07T12:00:00Z",
        "  type                            listed    known  would recover",
        "  payment_intent.payment_failed        1        0              1",
        "  payment_intent.succeeded             4        0              4",
        "Total: 1 page, 5 listed, 0 known, 5 would recover",
        "5 events never reached the receiver, created between "
        f"{_iso(NOW - dt.timedelta(hours=3))} and "
        f"{_iso(dt.datetime(1970, 1, 1) + dt.timedelta(seconds=last['created']))}.",
        "Check the webhook endpoint in Stripe's dashboard for that time: is it enabled, did it "
        "answer 2xx, does its signing secret match STRIPE_WEBHOOK_SECRET?",
        "Run again without --dry-run to take them in.",
    ]
    assert first["created"] == T0
    _nothing_written(stripe_events_env)


def test_cli_human_output_names_the_run_and_what_to_check(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listed = _fill(stripe_events_api, 3)
    _deliver(stripe_events_env, listed[0])
    code, out, _ = run_cli(capsys, "reconcile", "stripe", *WINDOW_ARGS)
    assert code == 0
    (run,) = _sweep_runs(stripe_events_env)
    lines = out.splitlines()
    assert lines[0] == (
        f"Reconciliation #{run.id}: stripe events created 2026-12-07T09:00:00Z .. "
        "2026-12-07T12:00:00Z"
    )
    assert "Total: 1 page, 3 listed, 1 known, 2 recovered" in lines
    assert lines[-2].startswith("2 events never reached the receiver, created between ")
    assert lines[-1].startswith("Check the webhook endpoint in Stripe's dashboard")
    code, out, _ = run_cli(capsys, "reconcile", "stripe", *WINDOW_ARGS)
    assert code == 0
    assert out.splitlines()[-2:] == [
        "Total: 1 page, 3 listed, 3 known, 0 recovered",
        "Every listed event had reached us: nothing was missed.",
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--since", "2026-12-07T12:00:00Z", "--until", "2026-12-07T11:00:00Z"],
            "error: since (2026-12-07T12:00:00Z) is after until (2026-12-07T11:00:00Z)",
        ),
        (["--since", "2026-10-01", "--until", "2026-12-07"], "wider than 30 days"),
        (["--since", "yesterday"], "error: --since must be an ISO date or time"),
        (["--until", "2026-13-01"], "error: --until must be an ISO date or time"),
        (
            ["--hours", "2", "--since", "2026-12-07"],
            "error: give hours (--hours) or since (--since), not both",
        ),
        (["--hours", "0"], "error: Invalid value for '--hours'"),
        (["--types", "payment_intent"], "error: 'payment_intent' is not a Stripe event type"),
        (["--types", "charge.refunded,bad type!"], "is not a Stripe event type"),
    ],
)
def test_cli_bad_window_or_types_exit_2_before_asking(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    _fill(stripe_events_api, 3)
    result = run_cli(capsys, "reconcile", "stripe", *argv)
    result.assert_one_error(2, message, stripe_events_api.api_key)
    assert stripe_events_api.requests == 0
    _nothing_written(stripe_events_env)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_debug_logs_never_show_the_key(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In process the log records go to pytest's handler, not stderr: read them there."""
    _fill(stripe_events_api, 3)
    caplog.set_level(logging.DEBUG)
    code, out, err = run_cli(capsys, "--log-level", "debug", "reconcile", "stripe", *WINDOW_ARGS)
    assert code == 0
    key = stripe_events_api.api_key
    assert "/v1/events" in caplog.text  # the SDK's and urllib3's debug lines were captured
    assert "reconcile stripe: page 1: 3 listed, 0 known, 3 recovered" in caplog.text
    assert key not in caplog.text and key not in out and key not in err


@pytest.mark.parametrize("backend", ["sqlite"])
def test_installed_command_with_debug_logs_never_shows_the_key(
    stripe_events_env: Engine, stripe_events_api: FakeStripeEventsAPI, tmp_path: Path
) -> None:
    """The installed entry point, where the debug logs really go to stderr."""
    _fill(stripe_events_api, 3)
    key = stripe_events_api.api_key
    env = stripe_env_of(stripe_events_env, api_key=key, api_base=stripe_events_api.url)
    argv = ("--log-level", "debug", "reconcile", "stripe", *WINDOW_ARGS)

    ok = run_installed(*argv, "--json", env=env, cwd=tmp_path)
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["recovered"] == 3
    assert "GET /v1/events" in ok.err  # debug lines did reach stderr
    assert key not in ok.out and key not in ok.err

    wrong = "sk_test_another_wrong_key_99999999"
    refused = run_installed(*argv, env=env | {"STRIPE_API_KEY": wrong}, cwd=tmp_path)
    refused.assert_one_error(1, "error: Stripe's API refused STRIPE_API_KEY", wrong)


# --- reconcile monetbil --------------------------------------------------------------------------


@pytest.fixture
def monetbil_env(
    engine: Engine, monetbil_check_api: FakeCheckPayment, monkeypatch: pytest.MonkeyPatch
) -> Engine:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", url_of(engine))
    monkeypatch.setenv("MONETBIL_CHECK_PAYMENT_URL", monetbil_check_api.url)
    return engine


def test_cli_monetbil_json(
    monetbil_env: Engine, monetbil_check_api: FakeCheckPayment, capsys: pytest.CaptureFixture[str]
) -> None:
    monetbil_check_api.add("tx_paid", 1, payment_ref="order-1", amount=500)
    monetbil_check_api.add("tx_pending", 3, payment_ref="order-2", amount=500)
    code, out, err = run_cli(
        capsys, "reconcile", "monetbil", "tx_paid", "tx_pending", "tx_unknown", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    (run,) = _sweep_runs(monetbil_env)
    rows = _events(monetbil_env)
    assert doc == {
        "sweep_id": run.id,
        "provider": "monetbil",
        "dry_run": False,
        "asked": 3,
        "known": 0,
        "recovered": 1,
        "unresolved": 2,
        "transactions": [
            {
                "transaction_id": "tx_paid",
                "outcome": "recovered",
                "id": rows["tx_paid:1"].id,
                "provider_event_id": "tx_paid:1",
                "event_type": "payment.success",
                "dispatch": "dispatched",
                "why": None,
            },
            {
                "transaction_id": "tx_pending",
                "outcome": "unresolved",
                "id": None,
                "provider_event_id": None,
                "event_type": None,
                "dispatch": None,
                "why": "status 3 is not a final Monetbil status",
            },
            {
                "transaction_id": "tx_unknown",
                "outcome": "unresolved",
                "id": None,
                "provider_event_id": None,
                "event_type": None,
                "dispatch": None,
                "why": "checkPayment knows no such transaction",
            },
        ],
    }
    assert (rows["tx_paid:1"].received_via, rows["tx_paid:1"].status) == ("api", "processed")
    assert (run.kind, run.provider, run.trigger, run.status) == (
        "reconcile",
        "monetbil",
        "cli",
        "succeeded",
    )
    code, out, _ = run_cli(capsys, "reconcile", "monetbil", "tx_paid", "--json")
    assert code == 0 and json.loads(out)["known"] == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_monetbil_without_the_url_exits_2(
    monetbil_env: Engine,
    monetbil_check_api: FakeCheckPayment,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MONETBIL_CHECK_PAYMENT_URL")
    result = run_cli(capsys, "reconcile", "monetbil", "tx_1")
    result.assert_one_error(2, "error: MONETBIL_CHECK_PAYMENT_URL is not set", "\0")
    assert monetbil_check_api.requests == 0
    _nothing_written(monetbil_env)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_monetbil_unreachable_exits_1(
    monetbil_env: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONETBIL_CHECK_PAYMENT_URL", closed_port_url() + "/checkPayment")
    result = run_cli(capsys, "reconcile", "monetbil", "tx_1", "tx_2", "--json")
    result.assert_one_error(1, "error: checkPayment unreachable: ConnectionRefusedError", "\0")
    assert "(asking about tx_1)" in result.err
    _nothing_written(monetbil_env)

"""Benchmark of the Stripe reconciliation: listed events per second, end to end, and where the
time goes (inside the HTTP calls to the Events API, or ours: the known-ids query, the gate).

The Events API is the test suite's fake (`payments_pipeline_tests/fakes/stripe_events_api.py`:
Stripe's list shape, newest first, pages of 100) on 127.0.0.1, holding `--events` events created in
the last hour. For each database (`--backends`: a SQLite file, and a database `pp_bench_<random>`
created on `--postgres-url` and dropped at the end), two scenarios, each `--repeat` times on freshly
seeded tables:

- `known`: every listed event is already a row (a delivery took it in): the run is the listing
  plus one known-ids query a page;
- `missing`: `--missing` of them (10%) are not: those go through the gate (`received_via = api`),
  are audited, and handed to the `--dispatch` engine (`table`: the claimed row is the job, as in
  production with workers; `inline`: processed in the run, as the demo does).

The clock covers `reconcile_stripe` whole (window given, so no default-window query), the HTTP time
is summed around each `StripeApi.call` (the SDK's request, its JSON parse included).

`--drift`: a day of `--payments` PaymentIntents (20,000) in the test suite's fake PaymentIntents
API (`fakes/stripe_payments_api.py`), our `payments` rows for all of them (one in 50 refunded at
Stripe only, so the merge finds differences); the clock covers `drift.stripe_drift` whole, with the
HTTP time and the time in `drift.compare` (the pandas merge, `import pandas` included on the first
run) reported apart.

    .venv/bin/python benchmarks/reconcile_benchmark.py   # 10,000 events, sqlite + postgres
    .venv/bin/python benchmarks/reconcile_benchmark.py --events 2000 --repeat 1 --backends sqlite
    .venv/bin/python benchmarks/reconcile_benchmark.py --drift            # 20,000 PaymentIntents
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness

from payments_pipeline import drift, migrations, store
from payments_pipeline.config import Settings
from payments_pipeline.dispatch import InlineDispatcher, TableDispatcher
from payments_pipeline.models import EventStatus, Provider, utcnow
from payments_pipeline.providers.stripe_api import StripeApi, StripeEvents, StripePayments
from payments_pipeline.reconcile import Window, reconcile_stripe
from payments_pipeline_tests.fakes.stripe_events_api import FakeStripeEventsAPI
from payments_pipeline_tests.fakes.stripe_payments_api import FakeStripePaymentsAPI

T = TypeVar("T")
TYPES = ("payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded")


class TimedApi(StripeApi):
    """`StripeApi` that sums the seconds spent in its calls (the HTTP requests)."""

    http_seconds = 0.0
    calls = 0

    def call(self, request: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return super().call(request)
        finally:
            self.http_seconds += time.perf_counter() - started
            self.calls += 1


@dataclass
class Sample:
    seconds: float
    http_seconds: float
    listed: int
    known: int
    recovered: int
    pages: int

    @property
    def rate(self) -> float:
        return self.listed / self.seconds

    @property
    def ours(self) -> float:
        return 1 - self.http_seconds / self.seconds


@contextmanager
def database(backend: str, postgres_url: str) -> Iterator[Engine]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            engine = store.make_engine(f"sqlite:///{folder}/bench.sqlite3")
            migrations.upgrade(engine)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    with harness.own_database(postgres_url, "pp_bench") as url:
        engine = store.make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def seed(engine: Engine, events: list[dict[str, Any]], missing: float) -> int:
    """Empty the tables, then hold every event but a `missing` share (every 1/missing-th)."""
    with engine.begin() as conn:
        for table in ("sweep_events", "sweep_runs", "payment_ledger", "payments", "webhook_events"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    step = round(1 / missing) if missing else 0
    held = [e for i, e in enumerate(events) if not step or i % step]
    now = utcnow()
    rows = [
        {
            "provider": Provider.STRIPE.value,
            "provider_event_id": e["id"],
            "event_type": e["type"],
            "status": EventStatus.PROCESSED.value,
            "payload": "{}",
            "created_at": now,
        }
        for e in held
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            store.insert_events(conn, rows=rows[start : start + 2000])
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE webhook_events"
            )
    return len(events) - len(held)


def run_once(engine: Engine, api: FakeStripeEventsAPI, window: Window, dispatch: str) -> Sample:
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False))
    dispatcher = InlineDispatcher(engine, settings) if dispatch == "inline" else TableDispatcher()
    with TimedApi(api.api_key, api.url) as timed:
        started = time.perf_counter()
        result = reconcile_stripe(
            engine, StripeEvents(timed), dispatcher, window=window, minutes=10
        )
        seconds = time.perf_counter() - started
    return Sample(
        seconds,
        timed.http_seconds,
        result.listed,
        result.known,
        len(result.recovered),
        result.pages,
    )


def listing_only(api: FakeStripeEventsAPI, window: Window) -> float:
    """Seconds to page through the window with nothing else done: the HTTP floor."""
    with StripeApi(api.api_key, api.url) as plain:
        started = time.perf_counter()
        for _ in StripeEvents(plain).pages(
            created_gte=window.created_gte, created_lte=window.created_lte
        ):
            pass
        return time.perf_counter() - started


def seed_payments(engine: Engine, intents: list[dict[str, Any]]) -> None:
    """Our rows for every PaymentIntent, as its succeeded event left them (refunds not applied)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM payments"))
    now = utcnow()
    rows = [
        {
            "provider": "stripe",
            "reference": pi["id"],
            "status": "succeeded",
            "amount": pi["amount"],
            "amount_received": pi["amount"],
            "amount_refunded": 0,
            "currency": pi["currency"],
            "livemode": False,
            "created_at": now,
            "updated_at": now,
        }
        for pi in intents
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(sa.insert(store.payments), rows[start : start + 2000])


def run_drift(args: argparse.Namespace) -> None:
    day = dt.date.today() - dt.timedelta(days=1)
    start, _ = drift.day_bounds(day)
    with FakeStripePaymentsAPI() as api:
        intents = [
            api.add_payment_intent(
                created=start + i * 86_000 // args.payments, amount=1000 + i % 700
            )
            for i in range(args.payments)
        ]
        for pi in intents[::50]:
            api.refund(pi["id"], 100)
        print(f"# drift benchmark: {args.payments} PaymentIntents on {day}, {args.repeat} runs")
        print(
            "backend   run compared  differences  seconds  compared/s  http s  pandas s  other s"
            "   (run 1 pays `import pandas`, as each launched run does)"
        )
        compare = drift.compare
        spent = {"compare": 0.0}

        def timed_compare(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return compare(*a, **k)
            finally:
                spent["compare"] += time.perf_counter() - started

        for backend in args.backends.split(","):
            with database(backend, args.postgres_url) as engine:
                seed_payments(engine, intents)
                for run in range(1, args.repeat + 1):
                    spent["compare"] = 0.0
                    drift.compare = timed_compare  # type: ignore[assignment]
                    with TimedApi(api.api_key, api.url) as timed:
                        started = time.perf_counter()
                        report = drift.stripe_drift(engine, StripePayments(timed), day)
                        seconds = time.perf_counter() - started
                    drift.compare = compare  # type: ignore[assignment]
                    other = seconds - timed.http_seconds - spent["compare"]
                    print(
                        f"{backend:<9} {run:>3} {report.compared:>8} {len(report.differences):>12} "
                        f"{seconds:>8.2f} {report.compared / seconds:>11,.0f} "
                        f"{timed.http_seconds:>7.2f} {spent['compare']:>9.2f} {other:>8.2f}"
                    )


def listing_with_sdk_objects(api: FakeStripeEventsAPI, window: Window) -> float:
    """Seconds to page through the window with `v1.events.list` and its `next_page` (an `Event`
    object built per event): what `StripeEvents` avoids by asking with `raw_request`."""
    with StripeApi(api.api_key, api.url) as plain:
        started = time.perf_counter()
        page = plain.client.v1.events.list(
            params={
                "created": {"gte": window.created_gte, "lte": window.created_lte},
                "limit": 100,
            }
        )
        while True:
            if not page.has_more:
                break
            page = page.next_page()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drift", action="store_true", help="measure the drift instead")
    parser.add_argument("--payments", type=int, default=20_000, help="--drift: PaymentIntents")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--missing", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--dispatch", choices=("table", "inline"), default="table")
    parser.add_argument("--postgres-url", default=harness.DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    harness.interrupt_on_signals()
    if args.drift:
        run_drift(args)
        return
    print(
        f"# reconcile benchmark: {args.events} events, {args.missing:.0%} missing, "
        f"dispatch {args.dispatch}, {args.repeat} runs each; {platform.node()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    now = int(time.time())
    with FakeStripeEventsAPI() as api:
        events = [
            api.add_event(
                TYPES[i % len(TYPES)],
                created=now - 3600 + i * 3600 // args.events,
                reference=f"pi_bench_{i:06d}",
                amount=1000 + i % 500,
            )
            for i in range(args.events)
        ]
        until = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)
        window = Window(until - dt.timedelta(hours=1, minutes=1), until)
        floor = statistics.median(listing_only(api, window) for _ in range(args.repeat))
        print(
            f"listing alone (the HTTP floor): {floor:.2f} s = {args.events / floor:,.0f} events/s"
        )
        objects = statistics.median(
            listing_with_sdk_objects(api, window) for _ in range(args.repeat)
        )
        print(
            f"listing alone with v1.events.list (an Event object per event): {objects:.2f} s = "
            f"{args.events / objects:,.0f} events/s"
        )
        print(
            "backend   scenario  listed  known  recovered  pages   seconds  events/s  http s  ours"
        )
        for backend in args.backends.split(","):
            with database(backend, args.postgres_url) as engine:
                for scenario, missing in (("known", 0.0), ("missing", args.missing)):
                    samples = []
                    for _ in range(args.repeat):
                        seed(engine, events, missing)
                        samples.append(run_once(engine, api, window, args.dispatch))
                    mid = sorted(samples, key=lambda s: s.seconds)[len(samples) // 2]
                    print(
                        f"{backend:<9} {scenario:<8} {mid.listed:>7} {mid.known:>6} "
                        f"{mid.recovered:>10} {mid.pages:>6} {mid.seconds:>9.2f} "
                        f"{mid.rate:>9,.0f} {mid.http_seconds:>7.2f} {mid.ours:>5.0%}"
                        f"   (runs: {', '.join(f'{s.rate:,.0f}/s' for s in samples)})"
                    )


if __name__ == "__main__":
    main()

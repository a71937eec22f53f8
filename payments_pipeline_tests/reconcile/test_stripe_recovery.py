"""What never reached the door, recovered: localstripe (a stateful Stripe emulator: payments made
through the official SDK, signed webhooks sent once) delivers to a real `payments-pipeline serve`
that is down for a while; `payments-pipeline reconcile stripe` then lists Stripe's events and takes
in what the receiver never saw. And a late delivery racing a reconciliation, in real parallel
processes on PostgreSQL and MariaDB, stores and applies each event once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.models import MISSED_DELIVERY, PaymentStatus, SweepKind
from payments_pipeline.status import read_status

from ..doors import point_at_stripe, run_cli
from ..fakes.localstripe_process import API_KEY, LocalStripe
from ..fakes.stripe_events_api import FakeStripeEventsAPI
from ..helpers import make_settings, payment_rows
from ..http.support import STRIPE_SECRET, free_port, serve, serve_env, stripe_headers

pytestmark = pytest.mark.slow


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _count(engine: Engine, table: sa.Table, *where: Any) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        )


def _via(engine: Engine) -> dict[str, str]:
    """`received_via` of every Stripe event, by provider event id."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.E.provider_event_id, store.E.received_via))
        return {key: via for key, via in rows}


def _reconcile(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    engine: Engine,
    api_base: str,
    *args: str,
    api_key: str = API_KEY,
) -> dict[str, Any]:
    point_at_stripe(monkeypatch, engine, api_key=api_key, api_base=api_base)
    monkeypatch.delenv("PAYMENTS_DISPATCH", raising=False)
    capsys.readouterr()
    code, out, err = run_cli(
        capsys, "--log-level", "warning", "reconcile", "stripe", "--json", *args
    )
    assert code == 0, err
    return dict(json.loads(out))


def _state(engine: Engine) -> tuple[Any, ...]:
    """Everything a second reconciliation must leave as it was."""
    with engine.connect() as conn:
        events = conn.execute(
            sa.select(store.E.id, store.E.status, store.E.attempts).order_by(store.E.id)
        ).all()
    return (
        [tuple(e) for e in events],
        payment_rows(engine),
        _count(engine, store.payment_ledger),
        _count(engine, store.sweep_events),
    )


def test_payments_made_while_the_receiver_was_down_are_recovered_once(
    sqlite_engine: Engine,
    localstripe: LocalStripe,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = sqlite_engine
    port = free_port()
    localstripe.register_webhook(f"http://127.0.0.1:{port}/webhooks/stripe", STRIPE_SECRET)
    with serve(engine, tmp_path, port=port):
        seen = [
            localstripe.pay(1000, "eur"),
            localstripe.pay(2500, "usd"),
            localstripe.pay(700, "eur", decline=True),
        ]
        _wait_for(lambda: len(payment_rows(engine)) == 3, "the first three deliveries")
    # The receiver is down: localstripe sends each webhook once, ~1 s later, and gives up.
    missed = [
        localstripe.pay(1500, "eur"),
        localstripe.pay(900, "eur", decline=True),
        localstripe.pay(4200, "usd"),
    ]
    time.sleep(2.5)
    with serve(engine, tmp_path, port=port):
        seen.append(localstripe.pay(3000, "eur"))
        _wait_for(lambda: len(payment_rows(engine)) == 4, "the delivery after the restart")
    assert not set(missed) & set(payment_rows(engine))
    report = read_status(engine, make_settings(engine))
    assert not report.oldest_stuck and report.dead_count == 0  # nothing looks wrong: the gap

    result = _reconcile(capsys, monkeypatch, engine, localstripe.url)
    assert (result["listed"], result["known"], result["recovered"]) == (7, 4, 3)
    assert result["by_type"] == {"payment_intent.succeeded": 2, "payment_intent.payment_failed": 1}
    assert {e["outcome"] for e in result["events"]} == {"dispatched"}
    rows = payment_rows(engine)
    assert set(rows) == set(seen) | set(missed)
    statuses = {ref: rows[ref][0] for ref in missed}
    assert statuses == {
        missed[0]: PaymentStatus.SUCCEEDED,
        missed[1]: PaymentStatus.FAILED,
        missed[2]: PaymentStatus.SUCCEEDED,
    }
    assert rows[missed[2]][1] == 4200 and rows[missed[2]][4] == "usd"
    via = _via(engine)
    recovered_ids = {e["provider_event_id"] for e in result["events"]}
    assert {k for k, v in via.items() if v == "api"} == recovered_ids
    assert sum(v == "webhook" for v in via.values()) == 4
    with engine.connect() as conn:
        run = conn.execute(
            sa.select(store.sweep_runs).where(store.sweep_runs.c.id == result["sweep_id"])
        ).one()
        reasons = (
            conn.execute(
                sa.select(store.sweep_events.c.reason).where(
                    store.sweep_events.c.sweep_id == result["sweep_id"]
                )
            )
            .scalars()
            .all()
        )
    assert (run.kind, run.provider, run.status) == (
        SweepKind.RECONCILE.value,
        "stripe",
        "succeeded",
    )
    assert (run.scanned, run.dispatched, run.skipped) == (7, 3, 4)
    assert reasons == [MISSED_DELIVERY] * 3

    before = _state(engine)
    again = _reconcile(capsys, monkeypatch, engine, localstripe.url)
    assert (again["listed"], again["known"], again["recovered"]) == (7, 7, 0)
    assert _state(engine) == before
    # The second run's default window follows on from the first (with its overlap).
    assert again["since"] < result["until"] <= again["until"]


def test_more_than_a_page_of_missed_events_is_recovered(
    sqlite_engine: Engine,
    localstripe: LocalStripe,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No endpoint was ever registered: 130 payments, each event recovered, in two pages."""
    references = [localstripe.pay(100 + i, "eur") for i in range(130)]
    result = _reconcile(capsys, monkeypatch, sqlite_engine, localstripe.url, "--hours", "1")
    assert (result["pages"], result["listed"], result["recovered"]) == (2, 130, 130)
    rows = payment_rows(sqlite_engine)
    assert set(rows) == set(references)
    assert {r[0] for r in rows.values()} == {PaymentStatus.SUCCEEDED}
    assert len({e["provider_event_id"] for e in result["events"]}) == 130


# --- the race: late deliveries against a reconciliation, in parallel processes -----------------


RACE_EVENTS = 240
PACE = 0.01


def _deliver(url: str, bodies: list[str], start_at: float) -> subprocess.Popen[bytes]:
    """A separate process that POSTs each signed body to the receiver, starting at `start_at`,
    paced (`PACE` s apart) so the deliveries overlap the reconciliations' listing."""
    script = (
        "import json, sys, time, httpx\n"
        "url, start, bodies = sys.argv[1], float(sys.argv[2]), json.load(sys.stdin)\n"
        "time.sleep(max(0.0, start - time.time()))\n"
        "with httpx.Client(timeout=30) as http:\n"
        "    for body, headers in bodies:\n"
        "        answer = http.post(url, content=body, headers=headers)\n"
        "        assert answer.status_code == 200, (answer.status_code, answer.text)\n"
        f"        time.sleep({PACE})\n"
    )
    signed = [(body, stripe_headers(body)) for body in bodies]
    process = subprocess.Popen(
        [sys.executable, "-c", script, url, str(start_at)], stdin=subprocess.PIPE
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(signed).encode())
    process.stdin.close()
    return process


def _reconcile_process(
    engine: Engine, api: FakeStripeEventsAPI, start_at: float, log: Path
) -> subprocess.Popen[bytes]:
    env = serve_env(engine, STRIPE_API_KEY=api.api_key, PAYMENTS_STRIPE_API_BASE=api.url)
    script = (  # everything imported before the start, so the run itself races
        "import sys, time\n"
        "import alembic.command, payments_pipeline.reconcile, payments_pipeline.migrations\n"
        "import payments_pipeline.providers.stripe_api, payments_pipeline.dispatch.inline\n"
        "from payments_pipeline.cli import main\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "sys.exit(main(['--log-level', 'warning', 'reconcile', 'stripe', '--hours', '2', "
        "'--json']))\n"
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(start_at)], env=env, stdout=out, stderr=out
        )


def test_a_late_delivery_racing_a_reconciliation_is_stored_and_applied_once(
    backend: str,
    engine: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    tmp_path: Path,
) -> None:
    """Stripe redelivers every event (two delivering processes, in opposite orders) through
    `serve --workers 2` while two reconciliations list and take in the same events: every event
    is one row, applied once, whichever door got there first."""
    if backend == "sqlite":
        pytest.skip("the race runs on the server databases (SQLite serialises every writer)")
    now = int(time.time())
    bodies = []
    for i in range(RACE_EVENTS):
        event = stripe_events_api.add_event(
            "payment_intent.succeeded",
            created=now - RACE_EVENTS + i,
            reference=f"pi_race_{i:04d}",
            amount=1000 + i,
            delivered=False,
        )
        bodies.append(json.dumps(event))
    port = free_port()
    with serve(engine, tmp_path, "--workers", "2", port=port):
        start = time.time() + 4
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        processes = [
            _deliver(url, bodies, start),
            _deliver(url, bodies[::-1], start),
            _reconcile_process(engine, stripe_events_api, start, tmp_path / "reconcile-1.log"),
            _reconcile_process(engine, stripe_events_api, start, tmp_path / "reconcile-2.log"),
        ]
        try:
            for process in processes:
                assert process.wait(timeout=240) == 0, (
                    tmp_path / "reconcile-1.log"
                ).read_text() + (tmp_path / "reconcile-2.log").read_text()
        finally:
            for process in processes:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        _wait_for(
            lambda: (
                _count(engine, store.webhook_events, store.E.status == "processed") == RACE_EVENTS
            ),
            "every event processed",
            timeout=60,
        )
    via = _via(engine)
    assert len(via) == RACE_EVENTS
    doors = Counter(via.values())
    # The deliveries (paced over ~3 s) and the reconciliations overlapped: each door won some.
    assert doors["api"] > 0 and doors["webhook"] > 0, doors
    assert _count(engine, store.payment_ledger) == RACE_EVENTS
    rows = payment_rows(engine)
    assert len(rows) == RACE_EVENTS
    assert all(
        rows[f"pi_race_{i:04d}"][:3] == (PaymentStatus.SUCCEEDED, 1000 + i, 1000 + i)
        for i in range(RACE_EVENTS)
    )
    with engine.connect() as conn:
        audited = (
            conn.execute(
                sa.select(store.sweep_events.c.event_id).where(
                    store.sweep_events.c.reason == MISSED_DELIVERY
                )
            )
            .scalars()
            .all()
        )
        api_ids = (
            conn.execute(sa.select(store.E.id).where(store.E.received_via == "api")).scalars().all()
        )
        runs = conn.execute(
            sa.select(
                store.sweep_runs.c.status,
                store.sweep_runs.c.scanned,
                store.sweep_runs.c.dispatched,
                store.sweep_runs.c.skipped,
            )
        ).all()
    # Each event the reconciliations took in is audited once, by the one that inserted it.
    assert sorted(audited) == sorted(api_ids)
    assert len(runs) == 2 and {r.status for r in runs} == {"succeeded"}
    assert sum(r.dispatched for r in runs) == len(api_ids)
    assert all(r.scanned == RACE_EVENTS == r.dispatched + r.skipped for r in runs)

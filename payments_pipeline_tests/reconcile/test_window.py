"""The listed window: its default follows on from the reconciled history, bad windows are refused
before anything is asked or written."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.models import Provider, SweepKind, SweepStatus
from payments_pipeline.reconcile import (
    FIRST_LOOKBACK,
    MAX_WINDOW,
    OVERLAP,
    ReconcileError,
    covered_until,
    parse_time,
    parse_types,
    stripe_window,
)

NOW = dt.datetime(2026, 12, 7, 12, 0, 0)
H = dt.timedelta(hours=1)


def _reconciled(
    engine: Engine,
    start: dt.datetime,
    end: dt.datetime,
    *,
    status: SweepStatus = SweepStatus.SUCCEEDED,
    provider: Provider = Provider.STRIPE,
    kind: SweepKind = SweepKind.RECONCILE,
) -> None:
    with engine.begin() as conn:
        sweep_id = store.insert_sweep_run(
            conn,
            started_at=end,
            trigger="schedule",
            dagster_run_id=None,
            minutes=10,
            provider=provider.value,
            kind=kind,
            window=(start, end),
        )
        store.finish_sweep_run(conn, sweep_id=sweep_id, finished_at=end, status=status)


def test_the_first_reconciliation_looks_72_hours_back(engine: Engine) -> None:
    window = stripe_window(engine, now=NOW)
    assert (window.since, window.until) == (NOW - FIRST_LOOKBACK, NOW)


def test_the_next_one_follows_on_with_ten_minutes_of_overlap(engine: Engine) -> None:
    _reconciled(engine, NOW - 5 * H, NOW - 2 * H)
    _reconciled(engine, NOW - 2 * H, NOW - H)
    assert stripe_window(engine, now=NOW).since == NOW - H - OVERLAP


def test_failed_runs_other_providers_and_sweeps_do_not_move_it(engine: Engine) -> None:
    _reconciled(engine, NOW - 5 * H, NOW - 3 * H)
    _reconciled(engine, NOW - 3 * H, NOW - H, status=SweepStatus.FAILED)
    _reconciled(engine, NOW - 3 * H, NOW - H, provider=Provider.MONETBIL)
    _reconciled(engine, NOW - 3 * H, NOW - H, kind=SweepKind.SWEEP)
    assert stripe_window(engine, now=NOW).since == NOW - 3 * H - OVERLAP


def test_a_narrow_window_run_by_hand_never_skips_the_gap_before_it(engine: Engine) -> None:
    """The schedule was off for two days; someone listed the last hour by hand: the next default
    run still starts where the gap-free history stops."""
    _reconciled(engine, NOW - 100 * H, NOW - 50 * H)
    _reconciled(engine, NOW - H, NOW)
    assert stripe_window(engine, now=NOW).since == NOW - 50 * H - OVERLAP


def test_a_pause_longer_than_30_days_catches_up_what_stripe_still_keeps(engine: Engine) -> None:
    _reconciled(engine, NOW - 40 * 24 * H, NOW - 39 * 24 * H)
    window = stripe_window(engine, now=NOW)
    assert window.since == NOW - MAX_WINDOW
    _reconciled(engine, NOW - 20 * 24 * H, NOW - 19 * 24 * H)  # after a gap at the floor
    assert stripe_window(engine, now=NOW).since == NOW - MAX_WINDOW


def test_covered_until_follows_overlapping_and_touching_windows_only() -> None:
    t = NOW
    assert covered_until([], start=t) is None
    assert covered_until([(t + H, t + 2 * H)], start=t) is None
    windows = [(t, t + H), (t + H, t + 3 * H), (t + 2 * H, t + 4 * H), (t + 5 * H, t + 6 * H)]
    assert covered_until(windows, start=t) == t + 4 * H
    assert covered_until([(t - H, t + H), (t, t + 30 * dt.timedelta(minutes=1))], start=t) == t + H


def test_explicit_windows_and_hours(engine: Engine) -> None:
    since = dt.datetime(2026, 12, 1)
    window = stripe_window(engine, since=since, until=dt.datetime(2026, 12, 2), now=NOW)
    assert (window.since, window.until) == (since, dt.datetime(2026, 12, 2))
    assert window.created_gte == int(since.replace(tzinfo=dt.UTC).timestamp())
    assert stripe_window(engine, hours=6, now=NOW).since == NOW - 6 * H
    aware = dt.datetime(2026, 12, 7, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert stripe_window(engine, since=aware, now=NOW).since == NOW


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": NOW + H}, "is after until"),
        ({"since": NOW - 31 * 24 * H}, "wider than 30 days"),
        ({"hours": 24 * 31}, "wider than 30 days"),
        ({"hours": 0}, "at least 1"),
        ({"hours": 2, "since": NOW - H}, "not both"),
    ],
)
def test_bad_windows_are_refused_before_anything_is_written(
    engine: Engine, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ReconcileError, match=message):
        stripe_window(engine, now=NOW, **options)  # type: ignore[arg-type]
    with engine.connect() as conn:
        assert store.first_reconciled_start(conn, provider=Provider.STRIPE) is None


def test_times_and_types_parse_or_say_what_to_fix() -> None:
    assert parse_time("2026-12-07", "--since") == dt.datetime(2026, 12, 7)
    assert parse_time("2026-12-07T10:00:00Z", "--since") == dt.datetime(2026, 12, 7, 10)
    assert parse_time("2026-12-07T11:00:00+01:00", "--since") == dt.datetime(2026, 12, 7, 10)
    with pytest.raises(ReconcileError, match="--until must be an ISO date"):
        parse_time("yesterday", "--until")
    assert parse_types(" charge.refunded, payment_intent.succeeded ,") == {
        "charge.refunded",
        "payment_intent.succeeded",
    }
    assert parse_types("") is None and parse_types(None) is None
    for bad in ("refunded", "charge refunded", "x" * 300):
        with pytest.raises(ReconcileError, match="is not a Stripe event type"):
            parse_types(bad)

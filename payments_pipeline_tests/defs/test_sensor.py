"""The sensor: a time cursor, one sweep for the providers whose events became stuck since the last
tick, deterministic run keys, and skip reasons that say what it saw. On every database: the query
is the part that depends on it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.models import EventStatus, Provider, SweepReason, utcnow

from ..conftest import EventFactory
from ..helpers import ago, fetch_event
from .conftest import execute_sweep, sensor_tick, sweep_rows


def _cursor(since: dt.datetime) -> str:
    return json.dumps({"checked_until": since.isoformat()})


def test_first_look_at_an_empty_table_skips_and_sets_the_cursor(
    engine: Engine, persistent_instance: dg.DagsterInstance
) -> None:
    before = utcnow()
    data = sensor_tick(engine, persistent_instance, None)
    assert not data.run_requests
    assert data.skip_message == "no new stuck events (first look): stripe 0, monetbil 0"
    written = json.loads(data.cursor)["checked_until"]
    assert written.endswith("Z")  # UTC, said
    checked = dt.datetime.fromisoformat(written).replace(tzinfo=None)
    assert before <= checked <= utcnow()


def test_events_that_became_stuck_since_the_cursor_request_one_scoped_sweep(
    engine: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    since = ago(minutes=1)
    # Became stuck 30 s ago (dispatched 10.5 min ago, minutes=10): new since the cursor.
    lost = event_factory(Provider.STRIPE, dispatched_at=ago(minutes=10, seconds=30))
    # Stuck for 5 minutes already: the previous tick saw it.
    event_factory(Provider.STRIPE, dispatched_at=ago(minutes=15))
    # In flight at the gate (claim not committed yet), or dispatched a moment ago: not stuck.
    event_factory(Provider.MONETBIL, created_at=ago(seconds=5))
    event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=2))
    data = sensor_tick(engine, persistent_instance, _cursor(since))
    (request,) = data.run_requests
    assert request.run_config["resources"]["sweep"]["config"] == {
        "minutes": 10,
        "provider": "stripe",
    }
    assert request.run_key.endswith(f"stripe 1 up to #{lost}")
    assert "stripe 1, monetbil 0" in request.tags["payments_pipeline/sensor_saw"]
    # Same cursor, same rows: the same run key, so a re-evaluated tick launches nothing new.
    assert (
        sensor_tick(engine, persistent_instance, _cursor(since)).run_requests[0].run_key
        == request.run_key
    )
    # The cursor moved to this tick: the next one has nothing new to say.
    again = sensor_tick(engine, persistent_instance, data.cursor)
    assert not again.run_requests
    assert again.skip_message.startswith("no new stuck events since ")
    assert again.skip_message.endswith(": stripe 0, monetbil 0")


def test_every_reason_counts_and_both_providers_mean_all(
    engine: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    since = ago(minutes=1)
    event_factory(Provider.STRIPE, created_at=ago(minutes=1, seconds=30))  # null, past the grace
    event_factory(
        Provider.MONETBIL,
        status=EventStatus.PROCESSING,
        attempts=1,
        dispatched_at=ago(minutes=31),
        processing_started_at=ago(minutes=30, seconds=20),
    )
    event_factory(  # backoff ended 20 s ago
        Provider.MONETBIL,
        status=EventStatus.FAILED,
        attempts=1,
        dispatched_at=ago(minutes=40),
        next_attempt_at=ago(seconds=20),
    )
    event_factory(  # ready for 5 minutes already
        Provider.STRIPE,
        status=EventStatus.FAILED,
        attempts=1,
        dispatched_at=ago(minutes=40),
        next_attempt_at=ago(minutes=5),
    )
    with engine.connect() as conn:
        seen = store.count_newly_stuck(
            conn,
            now=utcnow(),
            since=since,
            minutes=10,
            timeout_minutes=30,
            created_after=ago(days=7),
        )
    assert {(s.provider, s.reason, s.count) for s in seen} == {
        (Provider.STRIPE, SweepReason.DISPATCHED_AT_NULL, 1),
        (Provider.MONETBIL, SweepReason.PROCESSING_STALLED, 1),
        (Provider.MONETBIL, SweepReason.FAILED_OLD, 1),
    }
    (request,) = sensor_tick(engine, persistent_instance, _cursor(since)).run_requests
    assert request.run_config["resources"]["sweep"]["config"]["provider"] == "all"
    assert "stripe 1" in request.run_key and "monetbil 2" in request.run_key


def test_an_old_event_that_becomes_stuck_late_is_not_missed(
    engine: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    """A cursor on ids would miss this one: a low id, dispatched long after higher ids got stuck."""
    late = event_factory(Provider.MONETBIL, created_at=ago(hours=2))
    event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=30))
    with engine.begin() as conn:
        conn.execute(
            sa.update(store.webhook_events)
            .where(store.webhook_events.c.id == late)
            .values(dispatched_at=ago(minutes=10, seconds=20))
        )
    (request,) = sensor_tick(engine, persistent_instance, _cursor(ago(minutes=1))).run_requests
    assert request.run_key.endswith(f"monetbil 1 up to #{late}")


def test_expired_events_do_not_wake_the_sensor(
    engine: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.STRIPE, created_at=ago(days=8))
    data = sensor_tick(engine, persistent_instance, None)
    assert not data.run_requests and data.skip_message.endswith("stripe 0, monetbil 0")


def test_an_unreadable_cursor_is_a_first_look(
    engine: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.STRIPE, dispatched_at=ago(hours=1))
    data = sensor_tick(engine, persistent_instance, "not json")
    assert data.run_requests[0].run_key.startswith("stuck (first look): stripe 1")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_requested_run_sweeps_that_provider_and_is_audited_as_sensor(
    db_env: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    stripe = event_factory(Provider.STRIPE, dispatched_at=ago(minutes=10, seconds=30))
    monetbil = event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=20))  # seen before
    (request,) = sensor_tick(db_env, persistent_instance, _cursor(ago(minutes=1))).run_requests
    result = execute_sweep(
        persistent_instance, run_config=dict(request.run_config), tags=dict(request.tags)
    )
    assert result.success
    assert fetch_event(db_env, stripe).status is EventStatus.PROCESSED
    assert fetch_event(db_env, monetbil).status is EventStatus.RECEIVED
    (row,) = sweep_rows(db_env)
    assert (row.trigger, row.provider, row.dagster_run_id) == ("sensor", "stripe", result.run_id)


def _explain(engine: Engine, statement: str, params: Any) -> list[str]:
    """The plan's lines (PostgreSQL, SQLite) or one line per table access (MySQL/MariaDB)."""
    backend = engine.dialect.name
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table would be scanned
            return [r[0] for r in conn.exec_driver_sql(f"EXPLAIN {statement}", params)]
        if backend == "sqlite":
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
            return [r[-1] for r in plan]
        accesses = conn.exec_driver_sql(f"EXPLAIN {statement}", params).mappings()
        return [f"{r['table']} type={r['type']} key={r['key']}" for r in accesses]


@pytest.mark.parametrize("since", [None, 1])
def test_the_sensor_query_is_served_by_indexes(
    engine: Engine, event_factory: EventFactory, since: int | None
) -> None:
    for _ in range(3):
        event_factory(Provider.STRIPE, status=EventStatus.PROCESSED, dispatched_at=ago(hours=1))
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        captured.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            store.count_newly_stuck(
                conn,
                now=utcnow(),
                since=None if since is None else ago(minutes=since),
                minutes=10,
                timeout_minutes=30,
                created_after=ago(days=7),
            )
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    (statement, params), *_ = [c for c in captured if "webhook_events" in c[0]]
    plan = _explain(engine, statement, params)
    on_table = [line for line in plan if "webhook_events" in line]
    assert on_table, plan
    assert not [line for line in plan if "Seq Scan" in line or "type=ALL" in line], plan
    assert not [line for line in on_table if line.startswith("SCAN")], plan

"""The job `replay_webhook_events` in process: by ids, dead since a date, refusals and why, the
audit, the engine, and config the check refuses before a run exists."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.defs.replay import parse_since, replay_run_config
from payments_pipeline.defs.resources import PaymentsDispatcher
from payments_pipeline.models import EventStatus, Provider

from ..conftest import EventFactory
from ..helpers import ago, fetch_event
from .conftest import assert_refused_before_a_run, dead_for_good, execute_job, sweep_rows


def _replay(
    instance: dg.DagsterInstance, run_config: dict[str, Any], **kw: Any
) -> dg.ExecuteInProcessResult:
    return execute_job(instance, "replay_webhook_events", run_config, **kw)


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}


def _audit(engine: Engine, sweep_id: int) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(store.sweep_events.c.event_id, store.sweep_events.c.reason)
            .where(store.sweep_events.c.sweep_id == sweep_id)
            .order_by(store.sweep_events.c.event_id)
        )
        return [(i, r) for i, r in rows]


def test_replay_by_ids_replays_dead_and_processed_and_says_why_it_refused_the_rest(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=5)
    done = event_factory(Provider.MONETBIL, status=EventStatus.PROCESSED, attempts=1)
    waiting = event_factory(Provider.STRIPE, status=EventStatus.FAILED, attempts=1)
    unknown = done + 1000
    result = _replay(instance, replay_run_config(event_ids=[dead, done, waiting, unknown]))
    assert result.success
    assert fetch_event(db_env, dead).status is EventStatus.PROCESSED  # inline: processed here
    assert fetch_event(db_env, done).status is EventStatus.PROCESSED
    assert fetch_event(db_env, waiting).status is EventStatus.FAILED  # untouched
    meta = _output_metadata(result)
    assert (meta["replayed"], meta["refused"], meta["left_out"]) == (2, 2, 0)
    assert meta["engine"] == "inline" and meta["processing_processed"] == 2
    report = meta["report"]
    assert report.startswith("**ATTENTION**: 2 id(s) refused")
    assert (
        f"| {waiting} | it is failed: only dead, processed or expired stuck events are replayed |"
        in report
    )
    assert f"| {unknown} | unknown event id |" in report
    assert f"| {dead} | stripe |" in report and f"| {done} | monetbil |" in report
    refused = {r.data["id"]: r.data["why"] for r in meta["refused_events"].records}
    assert refused == {
        waiting: "it is failed: only dead, processed or expired stuck events are replayed",
        unknown: "unknown event id",
    }
    assert "**Replayed 2** of 4 asked" in report
    assert "**Refused 2**: 1 it is failed: only dead, processed or expired stuck events" in report
    assert f"| {dead} | stripe | `evt_" in report and "| processed |  |" in report
    found = instance.get_run_by_id(result.run_id).tags["payments_pipeline/found"]
    assert found == "2 replayed, 2 refused"
    (row,) = sweep_rows(db_env)
    assert (row.trigger, row.dagster_run_id, row.status) == ("ui", result.run_id, "succeeded")
    assert (row.scanned, row.dispatched, row.skipped) == (4, 2, 2)
    assert _audit(db_env, row.id) == [(dead, "replay"), (done, "replay")]


def test_a_replay_whose_events_die_again_opens_with_attention_and_shows_each_last_error(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    broken = dead_for_good(event_factory, 2)
    result = _replay(instance, replay_run_config(event_ids=broken))
    assert result.success  # the replay ran; what it found is in the tag and the report
    meta = _output_metadata(result)
    assert (meta["replayed"], meta["dead_again"], meta["refused"]) == (2, 2, 0)
    report = meta["report"]
    assert report.startswith("**ATTENTION**: 2 replayed event(s) died again")
    error = fetch_event(db_env, broken[0]).last_error
    assert error and f"| dead | {error} |" in report
    rows = {r.data["id"]: r.data for r in meta["replayed_events"].records}
    assert {rows[i]["outcome"] for i in broken} == {"dead"}
    assert rows[broken[0]]["last_error"] == error
    assert "dismiss_webhook_events" in report.split("**What to do next**")[1]
    found = instance.get_run_by_id(result.run_id).tags["payments_pipeline/found"]
    assert found == "2 replayed, 2 dead again"


def test_replay_dead_since_takes_one_providers_dead_events_up_to_the_limit(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    recent = [event_factory(Provider.STRIPE, status=EventStatus.DEAD) for _ in range(3)]
    monetbil = event_factory(Provider.MONETBIL, status=EventStatus.DEAD)
    old = event_factory(Provider.STRIPE, status=EventStatus.DEAD)
    with db_env.begin() as conn:
        conn.execute(
            sa.update(store.webhook_events).where(store.E.id == old).values(updated_at=ago(days=3))
        )
    since = ago(days=1).date().isoformat()  # midnight UTC yesterday: after `old` died
    config = replay_run_config(provider="stripe", since=since) | {"limit": 2}
    result = _replay(instance, config, tags={"payments_pipeline/trigger": "api"})
    assert result.success
    assert [fetch_event(db_env, i).status for i in recent] == [
        EventStatus.PROCESSED,
        EventStatus.PROCESSED,
        EventStatus.DEAD,  # over the limit: said, not lost
    ]
    assert fetch_event(db_env, monetbil).status is EventStatus.DEAD
    assert fetch_event(db_env, old).status is EventStatus.DEAD
    meta = _output_metadata(result)
    assert (meta["replayed"], meta["refused"], meta["left_out"]) == (2, 0, 1)
    assert "1 more event(s) match, not replayed (limit): launch again" in meta["report"]
    assert f"dead stripe events since {since}" in meta["report"]
    (row,) = sweep_rows(db_env)
    assert (row.trigger, row.provider) == ("api", "stripe")


def test_replay_through_the_table_engine_leaves_the_events_to_the_workers(
    db_env: Engine,
    event_factory: EventFactory,
    instance: dg.DagsterInstance,
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=5)
    table = PaymentsDispatcher(mode="table")
    result = _replay(instance, replay_run_config(event_ids=[dead]), resources={"dispatcher": table})
    assert result.success
    event = fetch_event(db_env, dead)
    assert event.status is EventStatus.RECEIVED and event.processing_started_at is None
    meta = _output_metadata(result)
    assert meta["engine"] == "table" and "processing_processed" not in meta
    assert "Handed on to the `table` engine's workers." in meta["report"]


def test_nothing_matching_is_a_replay_of_nothing_and_says_so(
    db_env: Engine, instance: dg.DagsterInstance
) -> None:
    result = _replay(instance, replay_run_config(provider="all", since="2026-11-30T00:00:00Z"))
    assert result.success
    meta = _output_metadata(result)
    assert meta["replayed"] == 0 and "Nothing matched" in meta["report"]
    assert not meta["report"].startswith("**ATTENTION**")
    assert "no audit row: nothing was replayed" in meta["report"]
    assert sweep_rows(db_env) == []
    found = instance.get_run_by_id(result.run_id).tags["payments_pipeline/found"]
    assert found == "nothing replayed"


@pytest.mark.parametrize("backend", ["sqlite"])  # Dagster's config check: no database involved
@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({}, "nothing to replay: fill in event_ids (event_ids: [812, 813]) or since"),
        ({"event_ids": []}, "nothing to replay: fill in event_ids"),
        ({"event_ids": [1], "since": "2026-11-30"}, "give event_ids or since, not both"),
        ({"since": "last tuesday"}, "since must be an ISO 8601 date or time"),
        ({"since": "2026-11-30", "limit": 0}, "limit must be a whole number >= 1, got 0"),
        ({"since": "2026-11-30", "status": "failed"}, "failed"),
        ({"since": "2026-11-30", "provider": "paypal"}, "paypal"),
        ({"event_ids": ["12"]}, "12"),
    ],
)
def test_bad_config_is_refused_before_a_run_exists(
    db_env: Engine, instance: dg.DagsterInstance, run_config: dict[str, Any], message: str
) -> None:
    assert_refused_before_a_run(db_env, instance, "replay_webhook_events", run_config, message)


def test_since_reads_dates_and_times_as_utc() -> None:
    assert parse_since("2026-11-30").isoformat() == "2026-11-30T00:00:00"
    assert parse_since("2026-11-30T12:30:00Z").isoformat() == "2026-11-30T12:30:00"
    assert parse_since("2026-11-30T12:30:00+01:00").isoformat() == "2026-11-30T11:30:00"
    with pytest.raises(ValueError, match="got '30/11/2026'"):
        parse_since("30/11/2026")

"""`webhook_backlog`: the read (on every database), the asset as the sweep's last step, its check,
and the sensor's refresh when the numbers change."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline import status
from payments_pipeline.config import load_settings
from payments_pipeline.defs.backlog import digest, webhook_backlog
from payments_pipeline.defs.resources import build_resources, sweep_run_config
from payments_pipeline.models import EventStatus, Provider, utcnow

from ..conftest import EventFactory
from ..helpers import ago, make_settings
from .conftest import execute_sweep, sensor_tick


def test_the_backlog_counts_what_is_not_done_and_how_long_it_has_been_stuck(
    engine: Engine, event_factory: EventFactory
) -> None:
    settings = make_settings(engine, stuck_requeue_minutes=10)
    event_factory(Provider.STRIPE, status=EventStatus.PROCESSED)  # history: not counted
    event_factory(Provider.STRIPE, dispatched_at=ago(minutes=1))  # queued, not stuck
    lost = ago(minutes=40)
    event_factory(Provider.STRIPE, dispatched_at=lost, created_at=ago(hours=2))  # stuck 30 min
    # A retried event, created 3 h ago, whose backoff ended 5 minutes ago: stuck 5 minutes.
    event_factory(
        Provider.MONETBIL,
        status=EventStatus.FAILED,
        attempts=3,
        dispatched_at=ago(minutes=50),
        processing_started_at=ago(minutes=49),
        next_attempt_at=ago(minutes=5),
        created_at=ago(hours=3),
    )
    event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=5)
    event_factory(Provider.STRIPE, created_at=ago(days=9))  # expired (stuck, out of the window)
    with engine.connect() as conn:
        backlog = status.read_backlog(conn, settings, payments=False)
    assert backlog.payments is None
    numbers = backlog.numbers()
    assert numbers["stripe_received"] == 3 and numbers["monetbil_failed"] == 1
    assert numbers["dead"] == 1 and numbers["monetbil_dead"] == 1
    assert numbers["open"] == 5 and "stripe_processed" not in numbers
    assert numbers["expired"] == 1 and numbers["stripe_expired"] == 1
    # inside the window, the stripe event lost 40 minutes ago has been stuck 30 (minutes=10);
    # the one created 9 days ago is expired, not counted here
    # (ages in whole minutes)
    assert numbers["longest_stuck_minutes"] in (29, 30)
    assert numbers["stripe_oldest_stuck_minutes"] in (9 * 1440 - 1, 9 * 1440)
    # monetbil: stuck since its backoff ended, not since it was created
    assert numbers["monetbil_longest_stuck_minutes"] in (4, 5)
    assert numbers["monetbil_oldest_stuck_minutes"] in (179, 180)
    assert not any(k.endswith("_seconds") for k in numbers)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_sweep_refreshes_the_backlog_and_its_check(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    dead = event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=5)
    result = execute_sweep(instance, minutes=10)
    assert result.success
    (materialization,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey("webhook_backlog")
    ]
    meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert meta["dead"] == 1 and meta["refreshed_by"] == "sweep"
    (row,) = [r.data for r in meta["dead_events"].records]
    assert (row["id"], row["provider"], row["attempts"], row["cause"]) == (
        dead,
        "monetbil",
        5,
        "permanent error on attempt 5",  # 5 of the default 10: not the budget
    )
    assert meta["payments_live"] == 0 and meta["payments_test"] == 0
    (check,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "backlog_keeps_up"
    ]
    assert check.passed and check.severity is dg.AssetCheckSeverity.WARN


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_check_warns_when_an_event_stays_stuck_past_twice_the_minutes(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    """The backlog alone (no sweep ran): an event lost 35 minutes ago has been stuck 25."""
    event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=35))
    event_factory(Provider.STRIPE, created_at=ago(days=9))  # expired: not what this check counts
    result = dg.materialize(
        [webhook_backlog],
        instance=instance,
        resources=build_resources(load_settings()),
        run_config=sweep_run_config(minutes=10, provider="all"),
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "backlog_keeps_up" and not check.passed
    assert check.description is not None
    assert "more than twice the sweep's minutes (20 min; monetbil 2" in check.description
    (materialization,) = result.get_asset_materialization_events()
    refreshed = materialization.materialization.metadata["refreshed_by"]
    assert refreshed == dg.TextMetadataValue("materialize")  # not a sweep: said so
    assert "payments-pipeline status" in check.description


def _backlog_events(data: Any) -> list[Any]:
    return [
        e
        for e in data.asset_events
        if getattr(e, "asset_key", None) == dg.AssetKey("webhook_backlog")
    ]


def test_the_sensor_reports_the_backlog_when_it_changes_and_only_then(
    engine: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    first = sensor_tick(engine, persistent_instance, None)
    reported = _backlog_events(first)
    assert [type(e) for e in reported] == [dg.AssetMaterialization, dg.AssetCheckEvaluation]
    assert reported[0].metadata["open"] == dg.IntMetadataValue(0)
    assert reported[0].metadata["refreshed_by"] == dg.TextMetadataValue("sensor")
    assert "payments_live" not in reported[0].metadata  # the payments table is the sweep's read
    assert json.loads(first.cursor)["backlog"]
    again = sensor_tick(engine, persistent_instance, first.cursor)
    assert _backlog_events(again) == []  # nothing changed: nothing reported
    event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=5)
    changed = sensor_tick(engine, persistent_instance, again.cursor)
    (materialization, evaluation) = _backlog_events(changed)
    assert materialization.metadata["dead"] == dg.IntMetadataValue(1)
    assert evaluation.passed


def test_the_sensor_reports_a_growing_age_only_when_it_crosses_a_threshold(
    engine: Engine, event_factory: EventFactory
) -> None:
    """With minutes=10 the thresholds are 20 min (the check's limit), 1 h, 6 h, 1 day, 1 week:
    an age growing by a minute is no news, crossing one is."""
    settings = make_settings(engine)
    event_factory(Provider.STRIPE, dispatched_at=ago(minutes=24))  # stuck 14 minutes
    with engine.connect() as conn:
        now = utcnow()
        at_14 = status.read_backlog(conn, settings, now=now, payments=False)
        at_15 = status.read_backlog(
            conn, settings, now=now + dt.timedelta(minutes=1), payments=False
        )
        at_21 = status.read_backlog(
            conn, settings, now=now + dt.timedelta(minutes=7), payments=False
        )
    assert at_15.numbers()["longest_stuck_minutes"] == at_14.numbers()["longest_stuck_minutes"] + 1
    assert digest(at_14, 10) == digest(at_15, 10)
    assert digest(at_15, 10) != digest(at_21, 10)  # past twice the minutes

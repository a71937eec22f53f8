"""The five-minute schedule: run config from the environment at tick time, default status from
PAYMENTS_STUCK_REQUEUE_ENABLED, and no tick while a sweep run is queued or in progress."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline.config import load_settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs.resources import sweep_run_config
from payments_pipeline.defs.schedules import build_schedule
from payments_pipeline.defs.sensors import build_sensor

from ..conftest import EventFactory
from .conftest import add_run, execute_sweep, sweep_rows

SCHEDULE = defs.resolve_schedule_def("requeue_stuck_webhooks_every_5_minutes")


def _tick(instance: dg.DagsterInstance) -> Any:
    """One tick, as the daemon evaluates it: its run requests, or its skip message."""
    with dg.build_schedule_context(instance=instance) as context:
        return SCHEDULE.evaluate_tick(context)


def test_minutes_are_read_when_the_tick_fires(
    persistent_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_STUCK_REQUEUE_MINUTES", "7")
    (request,) = _tick(persistent_instance).run_requests or []
    assert request.run_config == sweep_run_config(minutes=7, provider="all")
    monkeypatch.setenv("PAYMENTS_STUCK_REQUEUE_MINUTES", "25")
    (request,) = _tick(persistent_instance).run_requests or []
    assert request.run_config["resources"]["sweep"]["config"]["minutes"] == 25


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("false", "STOPPED"), ("0", "STOPPED"), ("true", "RUNNING"), ("", "RUNNING")],
)
def test_default_status_follows_the_enabled_flag(flag: str, expected: str) -> None:
    settings = load_settings({"PAYMENTS_STUCK_REQUEUE_ENABLED": flag})
    assert build_schedule(settings).default_status.value == expected
    assert build_sensor(settings).default_status.value == expected


@pytest.mark.parametrize(
    "status",
    [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ],
)
def test_skips_while_a_sweep_run_is_queued_or_in_progress(
    persistent_instance: dg.DagsterInstance, status: dg.DagsterRunStatus
) -> None:
    run_id = add_run(persistent_instance, status, "requeue_stuck_webhooks")
    data = _tick(persistent_instance)
    assert not data.run_requests
    assert data.skip_message is not None
    assert run_id[:8] in data.skip_message and status.value in data.skip_message


def test_finished_sweeps_and_other_jobs_do_not_hold_the_turn(
    persistent_instance: dg.DagsterInstance,
) -> None:
    add_run(persistent_instance, dg.DagsterRunStatus.SUCCESS, "requeue_stuck_webhooks")
    add_run(persistent_instance, dg.DagsterRunStatus.FAILURE, "requeue_stuck_webhooks")
    add_run(persistent_instance, dg.DagsterRunStatus.STARTED, "some_other_job")
    data = _tick(persistent_instance)
    assert data.skip_message is None and len(data.run_requests or []) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_scheduled_run_is_audited_as_schedule(
    db_env: Engine, event_factory: EventFactory, persistent_instance: dg.DagsterInstance
) -> None:
    event_factory("stripe")
    (request,) = _tick(persistent_instance).run_requests or []
    result = execute_sweep(
        persistent_instance, run_config=dict(request.run_config), tags=dict(request.tags)
    )
    assert result.success
    assert result.dagster_run.tags["dagster/schedule_name"] == SCHEDULE.name
    (row,) = sweep_rows(db_env)
    assert row.trigger == "schedule" and row.dagster_run_id == result.run_id

"""The job `dismiss_webhook_events` in process: what it settles, the audit, the run page, and
config the check refuses before a run exists."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline.defs.dismiss import dismiss_run_config
from payments_pipeline.models import EventStatus, Provider

from ..conftest import EventFactory
from ..helpers import ago, fetch_event
from .conftest import assert_refused_before_a_run, execute_job, sweep_rows


def _dismiss(instance: dg.DagsterInstance, run_config: dict[str, Any]) -> Any:
    return execute_job(instance, "dismiss_webhook_events", run_config)


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}


def test_the_job_dismisses_dead_and_expired_events_with_the_reason(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=3)
    expired = event_factory(
        Provider.MONETBIL,
        status=EventStatus.RECEIVED,
        dispatched_at=ago(days=8),
        created_at=ago(days=8),
    )
    fresh = event_factory(Provider.STRIPE)
    config = dismiss_run_config(event_ids=[dead, expired, fresh], reason="test-mode events")
    result = _dismiss(instance, config)
    assert result.success
    assert fetch_event(db_env, dead).status is EventStatus.DISMISSED
    assert fetch_event(db_env, expired).status is EventStatus.DISMISSED
    assert fetch_event(db_env, fresh).status is EventStatus.RECEIVED
    meta = _output_metadata(result)
    assert (meta["dismissed"], meta["refused"]) == (2, 1)
    report = meta["report"]
    assert report.startswith("**ATTENTION**: 1 id(s) refused")
    assert "**Dismissed 2** (reason: test-mode events)" in report
    assert (
        f"| {fresh} | it is received: only dead or expired stuck events are dismissed |" in report
    )
    found = instance.get_run_by_id(result.run_id).tags["payments_pipeline/found"]
    assert found == "2 dismissed, 1 refused"
    (row,) = sweep_rows(db_env)
    assert (row.kind, row.note, row.trigger, row.dagster_run_id) == (
        "dismiss",
        "test-mode events",
        "ui",
        result.run_id,
    )


@pytest.mark.parametrize("backend", ["sqlite"])  # Dagster's config check: no database involved
@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        (dismiss_run_config(event_ids=[1], reason="   "), "a dismissal needs a reason"),
        ({"ops": {"dismiss_events": {"config": {"event_ids": [1]}}}}, "reason"),
        ({"ops": {"dismiss_events": {"config": {"reason": "dup"}}}}, "event_ids"),
    ],
)
def test_bad_config_is_refused_before_a_run_exists(
    db_env: Engine, instance: dg.DagsterInstance, run_config: dict[str, Any], message: str
) -> None:
    assert_refused_before_a_run(db_env, instance, "dismiss_webhook_events", run_config, message)

"""The reconciliation's Dagster door, in process against our fake Stripe Events API and the fake
checkPayment: the materialization's metadata, the check `no_missed_deliveries`, the launchpad's
window, the audit row of the run, failures in one sentence without the key, the hourly schedule,
the Monetbil job, and the one-at-a-time limit of both shipped instance configs."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster import serialize_value
from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.config import load_settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs.reconcile import build_reconcile_schedule
from payments_pipeline.defs.tags import RECONCILE_TAG
from payments_pipeline.models import Provider

from ..fakes.monetbil_check_api import FakeCheckPayment
from ..fakes.stripe_events_api import FakeStripeEventsAPI
from .conftest import add_run, sweep_rows

STRIPE_JOB = "reconcile_stripe_events"
MONETBIL_JOB = "reconcile_monetbil_payments"
ASSET = "recovered_webhook_events"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("clean_door_env")


def _now() -> int:
    return int(time.time())


def _run(
    instance: dg.DagsterInstance, job: str = STRIPE_JOB, **kw: Any
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kw
    )


def _materialization(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(ASSET)
    return dict(materialization.metadata)


def _values(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _check(result: dg.ExecuteInProcessResult) -> Any:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _failure(result: dg.ExecuteInProcessResult) -> Any:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data


def _run_log(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything the run's event log holds, serialized: what the UI can show."""
    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


def _received(engine: Engine, event: dict[str, Any]) -> None:
    gate.receive(
        engine,
        provider=Provider.STRIPE,
        provider_event_id=event["id"],
        event_type=event["type"],
        payload=json.dumps(event),
        minutes=10,
    )


def _event_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(store.E.provider_event_id)).scalars())


# --- the Stripe job ------------------------------------------------------------------------------


def test_the_job_recovers_reports_and_warns_then_passes_on_a_second_run(
    stripe_events_env: Engine, stripe_events_api: FakeStripeEventsAPI, instance: dg.DagsterInstance
) -> None:
    now = _now()
    added = [
        stripe_events_api.add_event(created=now - 3600 - i, delivered=False) for i in range(120)
    ]
    _received(stripe_events_env, added[0])
    result = _run(instance)
    assert result.success

    metadata = _materialization(result)
    assert next(iter(metadata)) == "report"
    values = _values(metadata)
    (row,) = sweep_rows(stripe_events_env)
    window = f"{values['window_start']} .. {values['window_end']}"
    assert values["window_start"] == row.window_start.isoformat(timespec="seconds") + "Z"
    assert values["window_end"] == row.window_end.isoformat(timespec="seconds") + "Z"
    assert (values["pages"], values["listed"], values["known"], values["recovered"]) == (
        2,
        120,
        1,
        119,
    )
    assert (values["other_types"], values["sweep_id"]) == (0, row.id)
    report = values["report"]
    assert report.startswith(
        f"**ATTENTION**: 119 event(s) created in {window} never reached the receiver"
    )
    assert f"**Listed 120** Stripe events created in {window} (2 page(s))" in report
    assert "50 of 119 shown." in report
    (by_type,) = metadata["by_type"].value.records
    assert by_type.data == {
        "event_type": "payment_intent.succeeded",
        "listed": 120,
        "known": 1,
        "recovered": 119,
    }
    shown = metadata["recovered_events"].value.records
    assert len(shown) == 50  # the run page shows 50; the audit holds all 119
    assert {r.data["outcome"] for r in shown} == {"dispatched"}
    assert shown[0].data["provider_event_id"] == added[1]["id"]  # newest first, as listed

    check = _check(result)
    assert check.check_name == "no_missed_deliveries" and not check.passed
    assert check.severity is dg.AssetCheckSeverity.WARN
    assert check.description.startswith(
        f"119 event(s) created in {window} never reached the receiver"
    )
    assert _values(dict(check.metadata)) == {"recovered": 119, "window": window}

    again = _run(instance)
    assert again.success
    assert _values(_materialization(again))["recovered"] == 0
    second = _check(again)
    assert second.passed and second.severity is dg.AssetCheckSeverity.WARN
    assert second.description.startswith("every event created in ")
    assert len(sweep_rows(stripe_events_env)) == 2


def test_the_audit_row_names_the_run_and_its_trigger(
    stripe_events_env: Engine, stripe_events_api: FakeStripeEventsAPI, instance: dg.DagsterInstance
) -> None:
    stripe_events_api.add_event(created=_now() - 60, delivered=False)
    launched = _run(instance)
    by_api = _run(instance, tags={"payments_pipeline/trigger": "api"})
    assert launched.success and by_api.success
    first, second = sweep_rows(stripe_events_env)
    assert (first.trigger, first.dagster_run_id, first.kind, first.provider, first.status) == (
        "ui",
        launched.run_id,
        "reconcile",
        "stripe",
        "succeeded",
    )
    assert (second.trigger, second.dagster_run_id) == ("api", by_api.run_id)
    assert launched.dagster_run.tags[RECONCILE_TAG] == "stripe"


def test_the_launchpad_overrides_the_window(
    stripe_events_env: Engine, stripe_events_api: FakeStripeEventsAPI, instance: dg.DagsterInstance
) -> None:
    now = _now()
    inside = stripe_events_api.add_event(created=now - 3600, delivered=False)
    stripe_events_api.add_event(created=now - 3 * 3600, delivered=False)
    result = _run(instance, run_config={"ops": {ASSET: {"config": {"hours": 2}}}})
    assert result.success
    (row,) = sweep_rows(stripe_events_env)
    assert row.window_end - row.window_start == dt.timedelta(hours=2)
    values = _values(_materialization(result))
    assert (values["listed"], values["recovered"]) == (1, 1)
    assert _event_ids(stripe_events_env) == {inside["id"]}
    (query,) = stripe_events_api.queries
    assert int(query["created[lte]"]) - int(query["created[gte]"]) == 7200


def test_the_launchpad_since_until_and_types(
    stripe_events_env: Engine, stripe_events_api: FakeStripeEventsAPI, instance: dg.DagsterInstance
) -> None:
    failed = stripe_events_api.add_event(
        "payment_intent.payment_failed", created=1_796_640_000 + 60, delivered=False
    )
    stripe_events_api.add_event(created=1_796_640_000 + 120, delivered=False)
    config = {
        "since": "2026-12-07T00:00:00Z",
        "until": "2026-12-07T12:00:00Z",
        "types": ["payment_intent.payment_failed"],
    }
    result = _run(instance, run_config={"ops": {ASSET: {"config": config}}})
    assert result.success
    values = _values(_materialization(result))
    assert (values["window_start"], values["window_end"]) == (
        "2026-12-07T00:00:00Z",
        "2026-12-07T12:00:00Z",
    )
    assert (values["listed"], values["recovered"], values["other_types"]) == (1, 1, 1)
    assert _event_ids(stripe_events_env) == {failed["id"]}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hours": 2, "since": "2026-12-07"}, "give hours (--hours) or since (--since), not both"),
        ({"since": "2026-12-07T12:00:00Z", "until": "2026-12-07T00:00:00Z"}, "is after until"),
        ({"since": "last week"}, "since must be an ISO date or time"),
        ({"types": ["nodot"]}, "'nodot' is not a Stripe event type"),
    ],
)
def test_a_bad_launchpad_window_fails_the_run_before_asking(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    instance: dg.DagsterInstance,
    config: dict[str, Any],
    message: str,
) -> None:
    result = _run(instance, run_config={"ops": {ASSET: {"config": config}}})
    assert not result.success
    assert message in _failure(result).user_failure_data.description
    assert stripe_events_api.requests == 0
    assert sweep_rows(stripe_events_env) == []


def test_a_refused_key_fails_the_run_in_one_sentence_that_names_no_key(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stripe_events_api.add_event(created=_now() - 60, delivered=False)
    wrong = "sk_test_wrong_key_for_dagster_0000000007"
    monkeypatch.setenv("STRIPE_API_KEY", wrong)
    result = _run(instance)
    assert not result.success
    assert result.dagster_run.status is dg.DagsterRunStatus.FAILURE
    failure = _failure(result)
    assert failure.user_failure_data.description == (
        f"Stripe's API refused STRIPE_API_KEY at {stripe_events_api.url} (HTTP 401): check the key"
    )
    assert failure.error.cls_name == "Failure"
    assert result.asset_materializations_for_node(ASSET) == []
    log = _run_log(instance, result.run_id)
    assert "refused STRIPE_API_KEY" in log  # the log does hold the failure...
    assert wrong not in log  # ...but never the key
    assert stripe_events_api.api_key not in log
    assert sweep_rows(stripe_events_env) == [] and _event_ids(stripe_events_env) == set()


def test_without_a_key_the_run_fails_saying_so(
    db_env: Engine, stripe_events_api: FakeStripeEventsAPI, instance: dg.DagsterInstance
) -> None:
    result = _run(instance)
    assert not result.success
    assert _failure(result).user_failure_data.description.startswith(
        "STRIPE_API_KEY is not set: create a restricted key with read access to Events"
    )
    assert stripe_events_api.requests == 0 and sweep_rows(db_env) == []


def test_the_key_is_in_no_log_nor_metadata_of_a_successful_run(
    stripe_events_env: Engine, stripe_events_api: FakeStripeEventsAPI, instance: dg.DagsterInstance
) -> None:
    stripe_events_api.add_event(created=_now() - 60, delivered=False)
    result = _run(instance)
    assert result.success
    log = _run_log(instance, result.run_id)
    assert "page 1: 1 listed, 0 known, 1 recovered" in log
    assert stripe_events_api.api_key not in log
    assert stripe_events_api.api_key not in serialize_value(_materialization(result))


# --- the schedule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "status", "why"),
    [
        ({"STRIPE_API_KEY": "sk_test_x", "PAYMENTS_RECONCILE_ENABLED": "true"}, "RUNNING", None),
        ({"STRIPE_API_KEY": "sk_test_x"}, "RUNNING", None),
        (
            {"STRIPE_API_KEY": "sk_test_x", "PAYMENTS_RECONCILE_ENABLED": "false"},
            "STOPPED",
            "PAYMENTS_RECONCILE_ENABLED is false",
        ),
        ({"PAYMENTS_RECONCILE_ENABLED": "true"}, "STOPPED", "STRIPE_API_KEY is not set"),
        ({}, "STOPPED", "STRIPE_API_KEY is not set"),
    ],
)
def test_the_schedules_default_status_says_why_it_is_stopped(
    env: dict[str, str], status: str, why: str | None
) -> None:
    schedule = build_reconcile_schedule(load_settings(env))
    assert schedule.name == "reconcile_stripe_events_hourly"
    assert schedule.default_status.value == status
    assert schedule.cron_schedule == "17 * * * *" and schedule.job_name == STRIPE_JOB
    description = schedule.description or ""
    if why is None:
        assert "Stopped by default" not in description
    else:
        assert description.endswith(f" Stopped by default here: {why}.")


def _tick(instance: dg.DagsterInstance) -> Any:
    schedule = defs.resolve_schedule_def("reconcile_stripe_events_hourly")
    with dg.build_schedule_context(instance=instance) as context:
        return schedule.evaluate_tick(context)


def _add_reconcile_run(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus, value: str = "stripe"
) -> str:
    """A run of the Stripe job in `status`, carrying the job's tags, as the daemon leaves it."""
    run_id = add_run(instance, status, STRIPE_JOB)
    instance.add_run_tags(run_id, {RECONCILE_TAG: value})
    return run_id


def test_a_tick_requests_a_run_and_the_run_is_audited_as_scheduled(
    stripe_events_env: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    persistent_instance: dg.DagsterInstance,
) -> None:
    data = _tick(persistent_instance)
    assert data.skip_message is None
    (request,) = data.run_requests or []
    assert isinstance(request, dg.RunRequest)
    stripe_events_api.add_event(created=_now() - 60, delivered=False)
    result = _run(persistent_instance, run_config=dict(request.run_config), tags=dict(request.tags))
    assert result.success
    (row,) = sweep_rows(stripe_events_env)
    assert (row.trigger, row.dagster_run_id) == ("schedule", result.run_id)


def test_a_tick_without_a_key_skips(persistent_instance: dg.DagsterInstance) -> None:
    data = _tick(persistent_instance)
    assert not data.run_requests
    assert data.skip_message == (
        "STRIPE_API_KEY is not set where the schedule runs: nothing to reconcile with"
    )


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED])
def test_a_tick_skips_while_a_reconciliation_is_queued_or_running(
    persistent_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    status: dg.DagsterRunStatus,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")
    run_id = _add_reconcile_run(persistent_instance, status)
    data = _tick(persistent_instance)
    assert not data.run_requests
    assert data.skip_message is not None
    assert data.skip_message.startswith("a reconciliation is still queued or in progress (run ")
    assert run_id[:8] in data.skip_message and status.value in data.skip_message


def test_a_finished_reconciliation_does_not_hold_the_turn(
    persistent_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")
    _add_reconcile_run(persistent_instance, dg.DagsterRunStatus.SUCCESS)
    _add_reconcile_run(persistent_instance, dg.DagsterRunStatus.FAILURE)
    data = _tick(persistent_instance)
    assert data.skip_message is None and len(data.run_requests or []) == 1


# --- the Monetbil job ----------------------------------------------------------------------------


def _monetbil_config(*ids: str) -> dict[str, Any]:
    return {"ops": {"reconcile_monetbil": {"config": {"transaction_ids": list(ids)}}}}


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return _values(dict(event.event_specific_data.metadata))


def test_the_monetbil_job_asks_checkpayment_and_audits(
    db_env: Engine,
    monetbil_check_api: FakeCheckPayment,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONETBIL_CHECK_PAYMENT_URL", monetbil_check_api.url)
    monetbil_check_api.add("tx_paid", 1, payment_ref="order-1", amount=700)
    result = _run(instance, MONETBIL_JOB, run_config=_monetbil_config("tx_paid", "tx_unknown"))
    assert result.success
    assert monetbil_check_api.requests == 2
    meta = _output_metadata(result)
    (row,) = sweep_rows(db_env)
    assert (meta["asked"], meta["known"], meta["recovered"], meta["unresolved"]) == (2, 0, 1, 1)
    assert meta["sweep_id"] == row.id
    assert meta["report"].startswith(
        "**ATTENTION**: 1 notification(s) never reached the receiver, recovered here"
    )
    assert (
        "| tx_unknown | unresolved |  | checkPayment knows no such transaction |"
        in (meta["report"])
    )
    assert (row.kind, row.provider, row.trigger, row.dagster_run_id, row.status) == (
        "reconcile",
        "monetbil",
        "ui",
        result.run_id,
        "succeeded",
    )
    assert _event_ids(db_env) == {"tx_paid:1"}
    assert result.dagster_run.tags[RECONCILE_TAG] == "monetbil"


def test_the_monetbil_job_without_the_url_fails_saying_so(
    db_env: Engine, instance: dg.DagsterInstance
) -> None:
    result = _run(instance, MONETBIL_JOB, run_config=_monetbil_config("tx_1"))
    assert not result.success
    assert _failure(result).user_failure_data.description.startswith(
        "MONETBIL_CHECK_PAYMENT_URL is not set"
    )
    assert sweep_rows(db_env) == []


# --- one reconciliation at a time ----------------------------------------------------------------


@pytest.mark.parametrize("config", ["dagster.yaml", "dagster.postgres.yaml"])
def test_both_shipped_instance_configs_run_one_reconciliation_at_a_time(config: str) -> None:
    document = yaml.safe_load((ROOT / "dagster_home" / config).read_text())
    limits = document["concurrency"]["runs"]["tag_concurrency_limits"]
    (limit,) = [entry for entry in limits if entry["key"] == RECONCILE_TAG]
    assert limit == {"key": "payments_pipeline/reconcile", "limit": 1}  # any value: both jobs
    for job in (STRIPE_JOB, MONETBIL_JOB):
        assert RECONCILE_TAG in defs.resolve_job_def(job).tags

"""The drift's Dagster door, in process against our fake Stripe PaymentIntents and Charges API,
our rows made by signed webhooks through the receiver: one partition materialized, its metadata
(the report with the launchpad config of the reconciliation to run, numbers per kind, the first 50
differences), the check `payments_match_stripe`, a failed day failing alone, the daily partitions
from PAYMENTS_RECONCILE_START_DATE in UTC, and the backfill limit of both shipped instance
configs."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster import serialize_value
from sqlalchemy import Engine

from payments_pipeline.config import DEFAULT_RECONCILE_START_DATE, Settings, load_settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs.drift import DRIFT, DRIFT_CHECK, build_drift_asset, stripe_payment_drift
from payments_pipeline.defs.resources import PaymentsDatabase, payments_settings
from payments_pipeline.defs.tags import FOUND_TAG
from payments_pipeline.drift import KINDS, day_bounds

from ..drift.support import Receiver
from ..fakes.stripe_payments_api import FakeStripePaymentsAPI
from .conftest import url_of

ROOT = Path(__file__).resolve().parents[2]
PARTITION = "2026-12-05"
T0, _ = day_bounds(dt.date(2026, 12, 5))
pytestmark = pytest.mark.usefixtures("clean_door_env")


def _materialize(
    engine: Engine, instance: dg.DagsterInstance, partition: str = PARTITION
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [stripe_payment_drift],
        partition_key=partition,
        resources={
            "payments_db": PaymentsDatabase(url=url_of(engine)),
            "settings": payments_settings,
        },
        instance=instance,
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node("stripe_payment_drift")
    return dict(materialization.metadata)


def _values(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def _failure(result: dg.ExecuteInProcessResult) -> Any:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data


def _run_tags(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """The run's tags as the Runs list shows them (with those added while it ran)."""
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return dict(run.tags)


def _drifting_day(api: FakeStripePaymentsAPI, receiver: Receiver) -> list[str]:
    """55 payments that never reached us, one refunded at Stripe since we heard of it, 3 that
    match, 1 in flight: 57 differences over 56 of 59 payments. Returns the drifted references."""
    lost = [api.add_payment_intent(created=T0 + 60 * i, amount=100 + i) for i in range(55)]
    refunded = api.add_payment_intent(created=T0 + 5000, amount=5000)
    receiver.deliver_of(api, refunded, "payment_intent.succeeded")
    api.refund(refunded["id"], 500)
    for i in range(3):
        pi = api.add_payment_intent(created=T0 + 6000 + i, amount=42 + i)
        receiver.deliver_of(api, pi, "payment_intent.succeeded")
    api.add_payment_intent(created=T0 + 7000, amount=1, status="processing")
    return [pi["id"] for pi in lost] + [refunded["id"]]


# --- one partition -------------------------------------------------------------------------------


def test_a_drifting_day_reports_what_to_do_and_the_check_fails_with_error(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    instance: dg.DagsterInstance,
) -> None:
    drifted = _drifting_day(stripe_payments_api, receiver)
    result = _materialize(stripe_payments_env, instance)
    assert result.success  # a red check is the finding, not a failed run

    metadata = _metadata(result)
    assert list(metadata) == [
        "report",
        "compared",
        "in_flight",
        "drifted",
        *KINDS,
        "differences",
    ]
    values = _values(metadata)
    assert {k: values[k] for k in ("compared", "in_flight", "drifted")} == {
        "compared": 59,
        "in_flight": 1,
        "drifted": 56,
    }
    # one int per kind, zeros included: what the UI plots across partitions
    assert {k: values[k] for k in KINDS} == {
        "missing_here": 55,
        "status": 1,
        "amount_received": 0,
        "amount_refunded": 1,
        "currency": 0,
        "livemode": 0,
    }
    for name in ("compared", "in_flight", "drifted", *KINDS):
        assert isinstance(metadata[name], dg.IntMetadataValue), name

    report = values["report"]
    assert report.startswith(
        "**ATTENTION**: 56 of 59 Stripe payments created on 2026-12-05 (UTC) differ from ours: "
        "missing_here 55, status 1, amount_refunded 1."
    )
    assert "with the job `reconcile_stripe_events` and this launchpad config" in report
    (config_text,) = re.findall(r"```yaml\n(.*?)```", report, flags=re.S)
    config = yaml.safe_load(config_text)
    assert config == {"ops": {"recovered_webhook_events": {"config": {"since": PARTITION}}}}
    # what is written out is a config the job takes, as pasted into the launchpad
    job = defs.resolve_job_def("reconcile_stripe_events")
    assert dg.validate_run_config(job, config)
    assert "(or `payments-pipeline reconcile stripe --since 2026-12-05`)" in report
    assert "50 of 57 shown (`drift stripe --json`)." in report
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert len(rows) == 50

    table = metadata["differences"].value
    assert [c.name for c in table.schema.columns] == ["reference", "kind", "ours", "stripe"]
    shown = [r.data for r in table.records]
    assert rows == [
        f"| `{d['reference']}` | {d['kind']} | {d['ours'] or '(no row)'} | {d['stripe']} |"
        for d in shown
    ]
    assert len(shown) == 50  # the first 50; the CLI's --json has every one
    everything = sorted(
        [
            {"reference": r, "kind": "missing_here", "ours": "", "stripe": "succeeded"}
            for r in drifted[:-1]
        ]
        + [
            {
                "reference": drifted[-1],
                "kind": "status",
                "ours": "succeeded",
                "stripe": "partially_refunded",
            },
            {"reference": drifted[-1], "kind": "amount_refunded", "ours": "0", "stripe": "500"},
        ],
        key=lambda d: d["reference"],
    )
    assert shown == everything[:50]

    (check,) = result.get_asset_check_evaluations()
    assert (check.asset_key, check.check_name) == (DRIFT, DRIFT_CHECK)
    assert not check.passed and check.severity is dg.AssetCheckSeverity.ERROR
    assert check.description == (
        "56 payment(s) created on 2026-12-05 differ from Stripe's (missing_here 55, status 1, "
        "amount_refunded 1): run reconcile_stripe_events over 2026-12-05, then materialize this "
        "day again"
    )
    assert _values(dict(check.metadata)) == {"compared": 59, "drifted": 56}
    assert result.dagster_run.tags["dagster/partition"] == PARTITION
    assert _run_tags(instance, result)[FOUND_TAG] == "56 of 59 differ"
    log = "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id))
    assert stripe_payments_api.api_key not in log


def test_a_day_that_matches_passes_the_check(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    instance: dg.DagsterInstance,
) -> None:
    api = stripe_payments_api
    for i in range(3):
        pi = api.add_payment_intent(created=T0 + i, amount=100 + i)
        receiver.deliver_of(api, pi, "payment_intent.succeeded")
    api.add_payment_intent(created=T0 + 9, amount=5, status="requires_payment_method")
    result = _materialize(stripe_payments_env, instance)
    assert result.success
    metadata = _metadata(result)
    values = _values(metadata)
    assert values["report"] == (
        "**3 Stripe payments created on 2026-12-05 (UTC) match ours** "
        "(1 still in flight at Stripe, not compared)."
    )
    assert (values["compared"], values["in_flight"], values["drifted"]) == (3, 1, 0)
    assert {k: values[k] for k in KINDS} == dict.fromkeys(KINDS, 0)
    assert metadata["differences"].value.records == []
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.severity is dg.AssetCheckSeverity.ERROR
    assert check.description == "the 3 Stripe payments created on 2026-12-05 match ours"
    assert _run_tags(instance, result)[FOUND_TAG] == "3 match"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_failed_day_fails_alone(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    persistent_instance: dg.DagsterInstance,
    sdk_retries: list[int],
) -> None:
    api = stripe_payments_api
    for day in (4, 5, 6):
        start, _ = day_bounds(dt.date(2026, 12, day))
        pi = api.add_payment_intent(created=start + 60, amount=100 * day)
        receiver.deliver_of(api, pi, "payment_intent.succeeded")

    before = _materialize(stripe_payments_env, persistent_instance, "2026-12-04")
    api.fail_always(500)
    failed = _materialize(stripe_payments_env, persistent_instance, "2026-12-05")
    api.clear_faults()
    after = _materialize(stripe_payments_env, persistent_instance, "2026-12-06")

    assert before.success and after.success and not failed.success
    assert failed.dagster_run.status is dg.DagsterRunStatus.FAILURE
    failure = _failure(failed)
    assert failure.user_failure_data.description == (
        f"Stripe's API answered HTTP 500 at {api.url} after 3 retries: try again later"
    )
    assert failure.error.cls_name == "Failure"
    assert failed.asset_materializations_for_node("stripe_payment_drift") == []
    assert failed.get_asset_check_evaluations() == []
    assert persistent_instance.get_materialized_partitions(DRIFT) == {"2026-12-04", "2026-12-06"}
    for result in (before, after):
        (check,) = result.get_asset_check_evaluations()
        assert check.passed


@pytest.mark.parametrize("backend", ["sqlite"])
def test_without_a_key_the_partition_fails_saying_so(
    db_env: Engine, stripe_payments_api: FakeStripePaymentsAPI, instance: dg.DagsterInstance
) -> None:
    result = _materialize(db_env, instance)
    assert not result.success
    assert _failure(result).user_failure_data.description.startswith(
        "STRIPE_API_KEY is not set: create a restricted key with read access to Events, "
        "PaymentIntents and Charges"
    )
    assert stripe_payments_api.requests == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_refused_key_fails_the_partition_in_one_sentence_naming_no_key(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "sk_test_wrong_drift_asset_key_0000042"
    monkeypatch.setenv("STRIPE_API_KEY", wrong)
    result = _materialize(stripe_payments_env, instance)
    assert not result.success
    assert _failure(result).user_failure_data.description == (
        f"Stripe's API refused STRIPE_API_KEY at {stripe_payments_api.url} (HTTP 401): "
        "check the key"
    )
    log = "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id))
    assert "refused STRIPE_API_KEY" in log and wrong not in log


# --- the partitions ------------------------------------------------------------------------------


def test_the_partitions_start_at_the_configured_date_daily_in_utc() -> None:
    asset = build_drift_asset(
        Settings(database_url="sqlite://", reconcile_start_date=dt.date(2026, 12, 1))
    )
    partitions = asset.partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.timezone == "UTC"
    assert partitions.start == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    now = dt.datetime(2026, 12, 4, 0, 30, tzinfo=dt.UTC)
    # complete days only: today's partition appears once the day is over
    assert partitions.get_partition_keys(current_time=now) == [
        "2026-12-01",
        "2026-12-02",
        "2026-12-03",
    ]
    window = partitions.time_window_for_partition_key("2026-12-02")
    assert (window.start, window.end) == (
        dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 3, tzinfo=dt.UTC),
    )
    assert asset.group_names_by_key[DRIFT] == "webhook_reconciliation"
    assert [spec.name for spec in asset.check_specs] == [DRIFT_CHECK]


def test_the_start_date_comes_from_the_environment_with_a_fixed_default() -> None:
    assert dt.date(2026, 11, 23) == DEFAULT_RECONCILE_START_DATE
    default = build_drift_asset(load_settings({})).partitions_def
    assert isinstance(default, dg.DailyPartitionsDefinition)
    assert default.start == dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    chosen = build_drift_asset(
        load_settings({"PAYMENTS_RECONCILE_START_DATE": "2026-10-01"})
    ).partitions_def
    assert isinstance(chosen, dg.DailyPartitionsDefinition)
    assert chosen.start == dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    # the shipped code location (loaded without the variable here) uses the default
    shipped = defs.resolve_assets_def(DRIFT).partitions_def
    assert isinstance(shipped, dg.DailyPartitionsDefinition)
    assert shipped.start == dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    assert shipped.get_first_partition_key() == "2026-11-23"


# --- the backfill limit --------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["dagster.yaml", "dagster.postgres.yaml"])
def test_both_shipped_instance_configs_run_2_backfill_partitions_at_a_time(config: str) -> None:
    document = yaml.safe_load((ROOT / "dagster_home" / config).read_text())
    limits = document["concurrency"]["runs"]["tag_concurrency_limits"]
    (limit,) = [entry for entry in limits if entry["key"] == "dagster/backfill"]
    assert limit == {"key": "dagster/backfill", "limit": 2}  # any backfill id: 2 runs in all

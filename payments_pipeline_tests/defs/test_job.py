"""The job in process: per-provider overrides, the audit row, metadata, config refusal, failures."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline.defs.resources import sweep_run_config
from payments_pipeline.models import EventStatus, Provider, SweepStatus

from ..conftest import EventFactory
from ..helpers import ago, fetch_event
from .conftest import BreakStep, execute_sweep, sweep_rows, url_of


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        e.materialization.asset_key.to_user_string(): dict(e.materialization.metadata)
        for e in result.get_asset_materialization_events()
    }


@pytest.mark.parametrize(("chosen", "other"), [("stripe", "monetbil"), ("monetbil", "stripe")])
def test_provider_override_moves_only_that_providers_events(
    db_env: Engine,
    event_factory: EventFactory,
    instance: dg.DagsterInstance,
    chosen: str,
    other: str,
) -> None:
    mine = event_factory(chosen, dispatched_at=ago(minutes=30))  # dispatch_lost
    theirs = event_factory(other)  # dispatched_at_null
    result = execute_sweep(instance, provider=chosen, minutes=10)
    assert result.success
    assert fetch_event(db_env, mine).status is EventStatus.PROCESSED
    untouched = fetch_event(db_env, theirs)
    assert untouched.status is EventStatus.RECEIVED and untouched.dispatched_at is None
    summary = result.output_for_node("requeue_sweep_summary")
    assert [p.value for p in summary.providers] == [chosen]
    assert summary.total.dispatched == 1
    (row,) = sweep_rows(db_env)
    assert (row.provider, row.minutes, row.status, row.trigger) == (chosen, 10, "succeeded", "ui")
    assert row.dagster_run_id == result.run_id and row.dispatched == 1


def test_payments_db_can_be_given_in_run_config(
    engine: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_id = event_factory(Provider.MONETBIL)
    config = sweep_run_config(minutes=10, provider="all")
    config["resources"]["payments_db"] = {"config": {"url": url_of(engine)}}
    result = execute_sweep(instance, run_config=config, tags={"payments_pipeline/trigger": "api"})
    assert result.success and fetch_event(engine, event_id).status is EventStatus.PROCESSED
    assert sweep_rows(engine)[0].trigger == "api"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_metadata_tells_what_the_sweep_found_claimed_dispatched_and_why(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    for _ in range(55):
        event_factory(Provider.STRIPE)
    event_factory(Provider.MONETBIL, status=EventStatus.FAILED, dispatched_at=ago(minutes=30))
    event_factory(Provider.MONETBIL, created_at=ago(days=9))  # expired
    result = execute_sweep(instance)
    assert result.success
    meta = _materializations(result)
    assert list(meta) == assets_in_order()
    found = meta["stuck_webhook_events"]
    plotted = {"found_stripe": 55, "found_monetbil": 1, "expired_monetbil": 1}
    for key, value in plotted.items():
        assert found[key] == dg.IntMetadataValue(value), key
    # totals and per-reason counts sum over the providers this run covered: text, never plotted
    as_text = {
        "found": 56,
        "found_dispatched_at_null": 55,
        "found_failed_old": 1,
        "found_dispatch_lost": 0,
        "expired": 1,
    }
    for key, value in as_text.items():
        assert found[key] == dg.TextMetadataValue(str(value)), key
    assert meta["claimed_webhook_events"]["claimed"] == dg.TextMetadataValue("56")
    assert "skipped_why" not in meta["claimed_webhook_events"]  # nothing was skipped
    dispatched = meta["dispatched_webhook_events"]
    assert dispatched["handed_on_monetbil"] == dg.IntMetadataValue(1)
    assert not any(k.startswith("dispatched_") for k in dispatched)  # no dispatched_<reason>
    assert dispatched["processing_processed"] == dg.TextMetadataValue("56")
    summary = meta["requeue_sweep_summary"]
    for key, value in {"scanned": 56, "dispatched": 56, "skipped": 0, "expired": 1}.items():
        assert summary[key] == dg.TextMetadataValue(str(value))
    assert summary["monetbil_expired"] == dg.IntMetadataValue(1)
    # the 55 Stripe events are test mode (`livemode: false`), the Monetbil success is live
    assert summary["payments_test"] == dg.IntMetadataValue(55)
    assert summary["payments_live"] == dg.IntMetadataValue(1)
    assert summary["payments_live_succeeded"] == dg.IntMetadataValue(1)
    assert dispatched["engine"] == dg.TextMetadataValue("inline")
    assert dispatched["handed_on"] == dg.TextMetadataValue("56")
    assert isinstance(summary["duration_seconds"], dg.FloatMetadataValue)
    table = summary["summary"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [r.data for r in table.records][-1] == {
        "provider": "total",
        "scanned": 56,
        "dispatched": 56,
        "skipped": 0,
        "expired": 1,
    }
    reasons = {r.data["reason"]: r.data for r in summary["reasons"].records}  # type: ignore[attr-defined]
    assert (
        reasons["failed_old"]["dispatched"] == 1 and reasons["processing_stalled"]["skipped"] == 0
    )
    assert next(iter(summary)) == "sweep"  # the report first
    expired = summary["expired_events"]
    assert isinstance(expired, dg.TableMetadataValue)
    assert [(r.data["provider"], r.data["status"]) for r in expired.records] == [
        ("monetbil", "received")
    ]
    events = summary["events"]
    assert isinstance(events, dg.TableMetadataValue) and len(events.records) == 50
    assert summary["events_shown"].text.startswith("50 of 56 shown")  # type: ignore[attr-defined]
    assert {c.name for c in events.schema.columns} >= {"provider_event_id", "reason", "outcome"}


def assets_in_order() -> list[str]:
    return [
        "stuck_webhook_events",
        "claimed_webhook_events",
        "dispatched_webhook_events",
        "requeue_sweep_summary",
        "webhook_backlog",
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_empty_sweep_still_reports_zeros(db_env: Engine, instance: dg.DagsterInstance) -> None:
    result = execute_sweep(instance)
    assert result.success
    summary = _materializations(result)["requeue_sweep_summary"]
    assert summary["scanned"] == dg.TextMetadataValue("0")
    assert summary["stripe_dispatched"] == dg.IntMetadataValue(0)
    assert len(summary["reasons"].records) == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("provider", ["paypal", "STRIPE", ""])
def test_a_bad_provider_is_refused_before_the_run_starts(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance, provider: str
) -> None:
    event_id = event_factory(Provider.STRIPE)
    with pytest.raises(dg.DagsterInvalidConfigError):
        execute_sweep(instance, provider=provider)
    assert sweep_rows(db_env) == [] and fetch_event(db_env, event_id).dispatched_at is None
    assert instance.get_runs_count() == 0


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("minutes", [0, -5, {"env": "SWEEP_TEST_MINUTES"}])
def test_minutes_below_one_is_refused_by_the_config_before_the_run_starts(
    db_env: Engine,
    event_factory: EventFactory,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    minutes: object,
) -> None:
    monkeypatch.setenv("SWEEP_TEST_MINUTES", "0")
    event_id = event_factory(Provider.STRIPE)
    config = {"resources": {"sweep": {"config": {"minutes": minutes}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="minutes must be a whole number >= 1"):
        execute_sweep(instance, run_config=config)
    assert instance.get_runs_count() == 0  # no run, so no step, no stack trace on a run page
    assert sweep_rows(db_env) == [] and fetch_event(db_env, event_id).dispatched_at is None


@pytest.mark.parametrize("backend", ["sqlite"])
def test_minutes_may_come_from_an_environment_variable(
    db_env: Engine, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWEEP_TEST_MINUTES", "7")
    config = {"resources": {"sweep": {"config": {"minutes": {"env": "SWEEP_TEST_MINUTES"}}}}}
    assert execute_sweep(instance, run_config=config).success
    assert sweep_rows(db_env)[0].minutes == 7


def test_a_failure_mid_sweep_marks_the_audit_row_failed(
    db_env: Engine, break_sweep_step: BreakStep, instance: dg.DagsterInstance
) -> None:
    break_sweep_step("finish_sweep", "disk full")
    result = execute_sweep(instance)
    assert not result.success
    (row,) = sweep_rows(db_env)
    assert row.status == SweepStatus.FAILED.value and "disk full" in row.error
    assert row.dagster_run_id == result.run_id


def test_a_missing_database_url_is_refused_before_the_run_naming_the_variable(
    instance: dg.DagsterInstance,
) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError, match="PAYMENTS_DATABASE_URL"):
        execute_sweep(instance)
    assert instance.get_runs_count() == 0


def _report(result: dg.ExecuteInProcessResult) -> str:
    sweep = _materializations(result)["requeue_sweep_summary"]["sweep"]
    assert isinstance(sweep, dg.MarkdownMetadataValue)
    return sweep.md_str or ""


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_report_tells_the_sweep_at_a_glance_and_what_to_do_next(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.STRIPE, dispatched_at=ago(minutes=30))  # dispatch_lost
    event_factory(Provider.MONETBIL, status=EventStatus.FAILED, dispatched_at=ago(minutes=30))
    old = [event_factory(Provider.STRIPE, created_at=ago(days=d)) for d in (12, 9)]
    dead = event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=5)
    result = execute_sweep(instance, minutes=10)
    assert result.success
    report = _report(result)
    assert report.startswith("**ATTENTION**: 2 expired event(s), 1 dead event(s)")
    assert "**Found 2 stuck**: 1 failed_old, 1 dispatch_lost" in report
    assert "**Claimed 2**, **dispatched 2** via `inline` (processed in this run: 2 processed)" in (
        report
    )
    assert "**Skipped 0**" in report and "changed after the scan" not in report
    # expired: listed by id, oldest first
    assert report.index(f"| {old[0]} | stripe |") < report.index(f"| {old[1]} | stripe |")
    assert "**Expired 2** (stuck, older than 7 days, never requeued), oldest first:" in report
    assert "**Dead 1** (1 monetbil): no sweep touches them again; each one's recorded cause:" in (
        report
    )
    # The recorded cause: dead after 5 of the 10 attempts is a permanent error, not the budget.
    assert f"| {dead} | monetbil | `" in report and "| 5 | permanent error on attempt 5 |" in report
    next_steps = report.split("**What to do next**")[1]
    assert "dismiss_webhook_events" in next_steps
    assert (
        "launch the job `replay_webhook_events` with `provider: monetbil`, `status: dead`"
        in next_steps
    )
    summary_meta = _materializations(result)["requeue_sweep_summary"]
    dead_rows = {r.data["id"]: r.data for r in summary_meta["dead_events"].records}
    assert dead_rows[dead]["cause"] == "permanent error on attempt 5"
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["payments_pipeline/found"] == "2 stuck, 1 dead, 2 expired"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_quiet_sweep_report_says_there_is_nothing_to_do(
    db_env: Engine, instance: dg.DagsterInstance
) -> None:
    result = execute_sweep(instance)
    report = _report(result)
    found = instance.get_run_by_id(result.run_id).tags["payments_pipeline/found"]
    assert found == "0 stuck, 0 dead, 0 expired"
    assert not report.startswith("**ATTENTION**")
    assert "**Found 0 stuck**" in report and "**Dead 0**" in report
    assert report.endswith("- Nothing: every stuck event found was handed on.")


def test_a_sweep_lists_its_oldest_expired_events_capped(
    engine: Engine, event_factory: EventFactory
) -> None:
    from payments_pipeline.sweep import EXPIRED_SHOWN, SweepParams, begin_sweep

    ids = [event_factory(Provider.STRIPE, created_at=ago(days=30 - i)) for i in range(22)]
    event_factory(Provider.STRIPE, status=EventStatus.PROCESSED, created_at=ago(days=40))
    scan = begin_sweep(engine, SweepParams(minutes=10), dry_run=True)
    assert sum(scan.expired.values()) == 22
    assert [e.event.id for e in scan.expired_events] == ids[:EXPIRED_SHOWN]  # oldest first


def _plotted(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, int]]:
    """Each asset's numbers Dagster plots (ints), but the audit row's id."""
    return {
        asset: {
            k: v.value
            for k, v in meta.items()
            if isinstance(v, dg.IntMetadataValue) and k != "sweep_id"
        }
        for asset, meta in _materializations(result).items()
    }


def test_a_one_provider_sweep_plots_nothing_that_an_every_provider_sweep_plots_otherwise(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    """Plots mean one thing: with the same events, every number a stripe-only sweep plots is the
    every-provider sweep's number (its total `expired` does not drop from 2 to 1)."""
    event_factory(Provider.STRIPE, created_at=ago(days=9))  # expired: no sweep changes them
    event_factory(Provider.MONETBIL, created_at=ago(days=9))
    event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=5)
    every = _plotted(execute_sweep(instance, provider="all"))
    stripe = _plotted(execute_sweep(instance, provider="stripe"))
    assert every["stuck_webhook_events"]["expired_stripe"] == 1
    assert every["requeue_sweep_summary"]["monetbil_expired"] == 1
    for asset, numbers in stripe.items():
        assert numbers, asset
        assert numbers.items() <= every[asset].items(), asset
    # the sweep's own assets plot only the providers it covered; the backlog is the global view
    assert not any("monetbil" in k for a in assets_in_order()[:4] for k in stripe[a])
    assert stripe["webhook_backlog"]["monetbil_dead"] == 1

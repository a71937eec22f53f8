"""`defs` loads, and every name the design fixes resolves to what it promises."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import dagster as dg
import pytest

from payments_pipeline.config import load_settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs.resources import ProviderChoice, SweepSettings
from payments_pipeline.defs.tags import trigger_from_tags
from payments_pipeline.models import SweepTrigger
from payments_pipeline.sweep import PROVIDER_CHOICES

REPO = Path(__file__).resolve().parents[2]
ASSETS = [
    "stuck_webhook_events",
    "claimed_webhook_events",
    "dispatched_webhook_events",
    "requeue_sweep_summary",
]


def test_defs_resolve_every_job_schedule_sensor_and_asset() -> None:
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("requeue_stuck_webhooks")
    assert job.executor_def is dg.in_process_executor
    assert job.tags["payments_pipeline/sweep"] == "requeue"
    schedule = defs.resolve_schedule_def("requeue_stuck_webhooks_every_5_minutes")
    assert schedule.cron_schedule == "*/5 * * * *" and schedule.job_name == job.name
    sensor = defs.resolve_sensor_def("webhook_events_sensor")
    assert sensor.minimum_interval_seconds == 30 and sensor.job_name == job.name
    keys = defs.resolve_all_asset_keys()
    assert {k.to_user_string() for k in keys} == {
        *ASSETS,
        "webhook_backlog",
        "recovered_webhook_events",
        "stripe_payment_drift",
    }
    graph = defs.resolve_asset_graph()
    for upstream, asset in itertools.pairwise(ASSETS):
        node = graph.get(dg.AssetKey(asset))
        assert node.group_name == "webhook_requeue"
        assert node.parent_keys == {dg.AssetKey(upstream)}
    backlog = graph.get(dg.AssetKey("webhook_backlog"))
    assert backlog.group_name == "webhook_health"
    assert backlog.parent_keys == {dg.AssetKey("requeue_sweep_summary")}
    replay = defs.resolve_job_def("replay_webhook_events")
    assert replay.executor_def is dg.in_process_executor
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {
        "no_expired_stuck_events",
        "no_dead_events",
        "every_claim_dispatched",
        "backlog_keeps_up",
        "no_missed_deliveries",
        "payments_match_stripe",
    }


def test_the_reconciliation_names_resolve() -> None:
    graph = defs.resolve_asset_graph()
    recovered = graph.get(dg.AssetKey("recovered_webhook_events"))
    assert recovered.group_name == "webhook_reconciliation"
    for name, value in (
        ("reconcile_stripe_events", "stripe"),
        ("reconcile_monetbil_payments", "monetbil"),
    ):
        job = defs.resolve_job_def(name)
        assert job.executor_def is dg.in_process_executor
        assert job.tags["payments_pipeline/reconcile"] == value
    stripe_job = defs.resolve_job_def("reconcile_stripe_events")
    assert {k.name for k in stripe_job.asset_layer.asset_graph.asset_check_keys} == {
        "no_missed_deliveries"
    }
    schedule = defs.resolve_schedule_def("reconcile_stripe_events_hourly")
    assert schedule.job_name == "reconcile_stripe_events"
    minute = schedule.cron_schedule.split()[0]
    assert minute.isdigit() and int(minute) % 5 != 0, "off the sweep's five-minute marks"


def test_the_job_runs_the_checks_too() -> None:
    job = defs.resolve_job_def("requeue_stuck_webhooks")
    selected = job.asset_layer.asset_graph.asset_check_keys
    assert {k.name for k in selected} == {
        "no_expired_stuck_events",
        "no_dead_events",
        "every_claim_dispatched",
        "backlog_keeps_up",
    }


def test_provider_choices_match_the_core() -> None:
    assert set(get_args(ProviderChoice)) == set(PROVIDER_CHOICES)
    params = SweepSettings(minutes=3, provider="stripe").params(load_settings({}))
    assert params.minutes == 3 and [p.value for p in params.providers] == ["stripe"]


def test_trigger_comes_from_the_tags_dagster_sets() -> None:
    assert trigger_from_tags({"dagster/schedule_name": "s"}) is SweepTrigger.SCHEDULE
    assert trigger_from_tags({"dagster/sensor_name": "s"}) is SweepTrigger.SENSOR
    assert trigger_from_tags({"payments_pipeline/trigger": "cli"}) is SweepTrigger.CLI
    assert trigger_from_tags({"payments_pipeline/trigger": "api"}) is SweepTrigger.API
    assert trigger_from_tags({"payments_pipeline/trigger": "cron?"}) is SweepTrigger.UI
    assert trigger_from_tags({"dagster/backfill": "b"}) is SweepTrigger.UI


@pytest.mark.slow
def test_dagster_definitions_validate_passes_on_the_workspace(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(exe), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=os.environ | {"DAGSTER_HOME": str(tmp_path)},  # else a temporary home in the repo
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "All code locations passed validation." in proc.stderr + proc.stdout


def test_nothing_outside_defs_imports_dagster() -> None:
    package = REPO / "payments_pipeline"
    offenders = [
        str(path.relative_to(REPO))
        for path in package.rglob("*.py")
        if "defs" not in path.relative_to(package).parts
        and path.name != "definitions.py"
        and any(
            line.strip().startswith(("import dagster", "from dagster"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


# What the launchpad prefills (each job's config defaults, `{}` here) either launches, or is
# refused before a run exists with what to fill in: Dagster's "Missing required config entry"
# (the launchpad flags it as you type) or our one sentence (when "Launch Run" is pressed).
PREFILLED = [
    ("requeue_stuck_webhooks", None),
    ("reconcile_stripe_events", None),
    ("replay_webhook_events", "replay_webhook_events: nothing to replay: fill in event_ids"),
    ("dismiss_webhook_events", 'Missing required config entry "ops"'),
    ("reconcile_monetbil_payments", 'Missing required config entry "ops"'),
]


@pytest.mark.parametrize(("job_name", "refusal"), PREFILLED)
def test_every_jobs_prefilled_config_launches_or_says_what_to_fill_in(
    job_name: str, refusal: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", "sqlite://")  # read where the run executes
    job = defs.resolve_job_def(job_name)
    if refusal is None:
        dg.validate_run_config(job, {})
        return
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(job, {})
    assert refusal in str(refused.value)


@pytest.mark.parametrize(
    ("job_name", "run_config", "sentence"),
    [
        (
            "requeue_stuck_webhooks",
            {"resources": {"sweep": {"config": {"minutes": 0}}}},
            "minutes must be a whole number >= 1, got 0",
        ),
        (
            "replay_webhook_events",
            {"event_ids": []},
            "replay_webhook_events: nothing to replay: fill in event_ids (event_ids: [812, 813]) "
            'or since (since: "2026-11-30", with provider and status: dead)',
        ),
        (
            "replay_webhook_events",
            {"since": "2026-11-30", "limit": 0},
            "limit must be a whole number >= 1, got 0",
        ),
        (
            "dismiss_webhook_events",
            {"ops": {"dismiss_events": {"config": {"event_ids": [], "reason": "dup"}}}},
            "dismiss_webhook_events: nothing to dismiss: fill in event_ids",
        ),
        (
            "dismiss_webhook_events",
            {"ops": {"dismiss_events": {"config": {"event_ids": [1], "reason": " "}}}},
            "a dismissal needs a reason: say why these events are settled",
        ),
    ],
)
def test_a_value_the_schema_cannot_bound_is_refused_with_one_sentence(
    job_name: str, run_config: dict[str, object], sentence: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole message is the sentence: no "Error 1: Post processing at path ...", no stack
    trace (what the launchpad's error dialog shows first is the message)."""
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", "sqlite://")
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(defs.resolve_job_def(job_name), run_config)
    assert str(refused.value) == sentence


def test_no_private_dagster_import() -> None:
    """Only Dagster's public API (its underscored modules change without notice)."""
    sources = sorted((REPO / "payments_pipeline").rglob("*.py"))
    private = [
        p.name for p in sources if re.search(r"^\s*(from|import) dagster\._", p.read_text(), re.M)
    ]
    assert private == []

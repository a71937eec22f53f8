"""`payments-pipeline requeue-stuck-webhooks` with DAGSTER_HOME set, and the demo: the same output
as the core path, a run on the instance audited as `cli`, and a refusal while a sweep is active."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline.cli import main
from payments_pipeline.models import EventStatus, Provider

from ..conftest import EventFactory
from ..helpers import fetch_event
from ..test_cli import assert_one_stripe_event_swept
from .conftest import BreakStep, add_run, sweep_rows

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def home_env(db_env: Engine, dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    return dagster_home


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "warning", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


@sqlite_only
def test_the_cli_sweep_is_a_dagster_run_with_the_same_output(
    home_env: Path, db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    event_factory(Provider.STRIPE)
    other = event_factory(Provider.MONETBIL)
    code, out, _ = _run(capsys, "requeue-stuck-webhooks", "--provider", "stripe")
    assert code == 0
    assert out.splitlines()[0] == "Sweep #1: minutes=10 provider=stripe"
    assert_one_stripe_event_swept(out)
    (run,) = _runs(home_env)
    assert run.job_name == "requeue_stuck_webhooks" and run.status is dg.DagsterRunStatus.SUCCESS
    assert run.tags["payments_pipeline/trigger"] == "cli"
    assert run.tags["payments_pipeline/sweep"] == "requeue"
    (row,) = sweep_rows(db_env)
    assert (row.trigger, row.dagster_run_id) == ("cli", run.run_id)
    assert fetch_event(db_env, other).dispatched_at is None


@sqlite_only
def test_json_output_is_the_contract(
    home_env: Path, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    event_factory(Provider.MONETBIL)
    code, out, _ = _run(capsys, "requeue-stuck-webhooks", "--json", "--minutes", "5")
    assert code == 0
    doc = json.loads(out)
    assert doc["minutes"] == 5 and doc["provider"] == "all"
    assert set(doc["providers"]) == {"stripe", "monetbil"}
    assert doc["total"] == {"scanned": 1, "dispatched": 1, "skipped": 0, "expired": 0}
    assert doc["events"][0]["outcome"] == "dispatched"


@sqlite_only
@pytest.mark.parametrize("status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED])
def test_refuses_while_a_sweep_run_is_queued_or_in_progress(
    home_env: Path,
    db_env: Engine,
    event_factory: EventFactory,
    capsys: pytest.CaptureFixture[str],
    status: dg.DagsterRunStatus,
) -> None:
    event_id = event_factory(Provider.STRIPE)
    with dg.DagsterInstance.from_config(str(home_env)) as instance:
        run_id = add_run(instance, status, "requeue_stuck_webhooks")
    code, out, err = _run(capsys, "requeue-stuck-webhooks")
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already queued or in progress" in errors[0]
    assert run_id[:8] in errors[0] and "Traceback" not in err
    assert fetch_event(db_env, event_id).dispatched_at is None
    assert sweep_rows(db_env) == [] and len(_runs(home_env)) == 1


@sqlite_only
@pytest.mark.parametrize("flag", ["--dry-run", "--no-dagster"])
def test_dry_run_and_no_dagster_leave_no_run(
    home_env: Path, event_factory: EventFactory, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    event_factory(Provider.STRIPE)
    code, out, _ = _run(capsys, "requeue-stuck-webhooks", flag, "--json")
    assert code == 0 and json.loads(out)["total"]["scanned"] == 1
    assert _runs(home_env) == []


@sqlite_only
def test_a_dagster_home_that_is_not_a_directory_is_one_line(
    db_env: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    code, _, err = _run(capsys, "requeue-stuck-webhooks")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: DAGSTER_HOME=")
    assert sweep_rows(db_env) == []


def test_the_demo_sweeps_through_dagster_on_its_own_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    for _ in range(2):
        code, out, _ = _run(capsys, "demo", "--directory", str(directory))
        assert code == 0 and "Total: 8 scanned, 8 dispatched, 0 skipped, 2 expired" in out
    home = directory / "dagster_home"
    assert f"DAGSTER_HOME={home}" in out and "dev -w " in out
    runs = _runs(home)  # the home keeps its history; the demo database is replaced
    assert len(runs) == 2 and {r.tags["payments_pipeline/trigger"] for r in runs} == {"cli"}
    assert "telemetry" in (home / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        record = instance.get_latest_materialization_event(dg.AssetKey("requeue_sweep_summary"))
    assert record is not None and record.asset_materialization is not None
    assert record.asset_materialization.metadata["dispatched"] == dg.TextMetadataValue("8")


@sqlite_only
def test_a_failed_run_is_one_error_line_naming_the_cause(
    home_env: Path,
    db_env: Engine,
    break_sweep_step: BreakStep,
    capsys: pytest.CaptureFixture[str],
) -> None:
    break_sweep_step("claim_candidates", "lock wait timeout")
    code, out, err = _run(capsys, "requeue-stuck-webhooks", "--json")
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed: RuntimeError: lock wait timeout" in errors[0]
    (run,) = _runs(home_env)
    assert run.status is dg.DagsterRunStatus.FAILURE and run.run_id in errors[0]
    (row,) = sweep_rows(db_env)
    assert row.status == "failed" and row.dagster_run_id == run.run_id


def test_cli_replay_and_dismiss_are_dagster_runs_with_their_audit_rows(
    home_env: Path, db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=3)
    other = event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=3)
    code, out, err = _run(capsys, "replay", str(dead))
    assert code == 0, err
    assert f"replayed #{dead} stripe" in out and ": processed" in out
    code, out, err = _run(capsys, "dismiss", str(other), "--reason", "test event")
    assert code == 0, err
    assert f"dismissed #{other} monetbil" in out
    replay_run, dismiss_run = sorted(_runs(home_env), key=lambda r: r.job_name, reverse=True)
    assert replay_run.job_name == "replay_webhook_events"
    assert dismiss_run.job_name == "dismiss_webhook_events"
    for run in (replay_run, dismiss_run):
        assert run.status is dg.DagsterRunStatus.SUCCESS
        assert run.tags["payments_pipeline/trigger"] == "cli"
    assert replay_run.tags["payments_pipeline/found"] == "1 replayed"
    assert dismiss_run.tags["payments_pipeline/found"] == "1 dismissed"
    rows = {row.kind: row for row in sweep_rows(db_env)}
    assert (rows["replay"].trigger, rows["replay"].dagster_run_id) == ("cli", replay_run.run_id)
    assert (rows["dismiss"].dagster_run_id, rows["dismiss"].note) == (
        dismiss_run.run_id,
        "test event",
    )


@sqlite_only
def test_a_cli_replay_refusing_every_id_is_a_run_with_no_audit_row(
    home_env: Path, db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = event_factory(Provider.STRIPE, status=EventStatus.FAILED)
    code, out, err = _run(capsys, "replay", str(waiting))
    assert code == 1 and _error_lines(err) == []
    assert f"not replayed #{waiting}: it is failed" in out
    assert "audit: none (nothing replayed)" in out
    (run,) = _runs(home_env)
    assert run.tags["payments_pipeline/found"] == "nothing replayed, 1 refused"
    assert sweep_rows(db_env) == []
    code, out, err = _run(capsys, "dismiss", str(waiting), "--reason", "nope")
    assert code == 1 and "audit: none (nothing dismissed)" in out
    assert sweep_rows(db_env) == [] and len(_runs(home_env)) == 2


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]

"""The `payments-pipeline` command: output shapes and every error path (one line, non-zero, no
change)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.cli import main
from payments_pipeline.models import EventStatus, Provider

from .conftest import EventFactory
from .helpers import ago, fetch_event, monetbil_payload


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pin the core path: a DAGSTER_HOME leaking from the shell must not reroute
    them through Dagster (payments_pipeline_tests/defs/ tests that path with its own home)."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture
def db_env(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", _url(engine))
    return engine


def test_json_output_matches_the_contract(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    event_factory(Provider.STRIPE, provider_event_id="evt_1")
    event_factory(Provider.MONETBIL, status=EventStatus.FAILED, dispatched_at=ago(minutes=30))
    code, out, _ = _run(
        capsys, "--log-level", "warning", "requeue-stuck-webhooks", "--json", "--minutes", "10"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["total"] == {"scanned": 2, "dispatched": 2, "skipped": 0, "expired": 0}
    assert doc["minutes"] == 10 and doc["provider"] == "all" and isinstance(doc["sweep_id"], int)
    assert {e["reason"] for e in doc["events"]} == {"dispatched_at_null", "failed_old"}


def assert_one_stripe_event_swept(out: str) -> None:
    """The summary `requeue-stuck-webhooks --provider stripe` prints after sweeping one stuck
    Stripe event, whichever way it ran (the Dagster run prints the same: defs/test_launch.py)."""
    lines = out.splitlines()
    assert lines[1:6] == [
        "=== Summary ===",
        "stripe:",
        "  Scanned: 1",
        "  Dispatched: 1",
        "  Skipped: 0",
    ]
    assert lines[-1] == "Total: 1 scanned, 1 dispatched, 0 skipped"
    assert "monetbil:" not in out


def test_human_output_keeps_the_seed_shape(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    event_factory(Provider.STRIPE)
    code, out, _ = _run(capsys, "requeue-stuck-webhooks", "--provider", "stripe")
    assert code == 0
    assert_one_stripe_event_swept(out)


def test_dry_run_changes_nothing(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = event_factory(Provider.STRIPE)
    code, out, _ = _run(capsys, "requeue-stuck-webhooks", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["events"][0]["outcome"] == "would_dispatch"
    assert fetch_event(db_env, event_id).dispatched_at is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["requeue-stuck-webhooks", "--minutes", "0"], "minutes must be"),
        (["requeue-stuck-webhooks", "--minutes", "-3"], "minutes must be"),
        (["requeue-stuck-webhooks", "--minutes", "ten"], "'ten' is not a valid integer"),
        (["requeue-stuck-webhooks", "--provider", "paypal"], "unknown provider 'paypal'"),
        (["requeue-stuck-webhooks", "--bogus"], "No such option"),
        (["replay", "abc"], "'abc' is not a valid integer"),
        (["replay"], "Missing argument"),
        (["dismiss", "1"], "Missing option '--reason'"),
        (["dismiss", "--reason", "dup"], "Missing argument"),
        (["dismiss", "1", "--reason", "  "], "a dismissal needs a reason"),
        (["nope"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    db_env: Engine,
    event_factory: EventFactory,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    event_id = event_factory(Provider.STRIPE)
    code, out, err = _run(capsys, *argv)
    assert code != 0
    assert len(_error_lines(err)) == 1 and message in err
    assert "Traceback" not in err and out == ""
    assert fetch_event(db_env, event_id).dispatched_at is None
    with db_env.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(store.sweep_runs)).scalar_one() == 0
        )


def test_bad_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMENTS_STUCK_REQUEUE_MINUTES", "soon")
    code, _, err = _run(capsys, "status")
    assert code == 2 and _error_lines(err) == [
        "error: PAYMENTS_STUCK_REQUEUE_MINUTES must be a whole number, got 'soon'"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://postgres:s3cret@127.0.0.1:1/nowhere",
            "database unreachable at postgresql+psycopg://postgres:***@127.0.0.1:1/nowhere",
        ),
        (
            "mysql://root:s3cret@127.0.0.1:1/nowhere",
            "database unreachable at mysql+pymysql://root:***@127.0.0.1:1/nowhere",
        ),
        ("nosuchdb://x", "not a usable database URL"),
    ],
)
def test_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", url)
    for argv in (["requeue-stuck-webhooks"], ["status"], ["db", "upgrade"], ["replay", "1"]):
        code, _, err = _run(capsys, *argv)
        assert code == 1 and len(_error_lines(err)) == 1 and message in err, err
        assert "s3cret" not in err and "Traceback" not in err


def test_unmigrated_database_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", f"sqlite:///{tmp_path / 'new.sqlite3'}")
    code, _, err = _run(capsys, "requeue-stuck-webhooks")
    assert code == 1 and "run `payments-pipeline db upgrade`" in err
    code, out, _ = _run(capsys, "db", "upgrade")
    assert code == 0 and "is at 0005" in out
    code, out, _ = _run(capsys, "--log-level", "error", "requeue-stuck-webhooks", "--json")
    assert code == 0 and json.loads(out)["total"]["scanned"] == 0


def test_status_reports_counts_stuck_and_dead(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    event_factory(Provider.STRIPE, created_at=ago(hours=3))
    event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=10)
    code, out, _ = _run(capsys, "status", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["counts"]["stripe"]["received"] == 1 and report["counts"]["monetbil"]["dead"] == 1
    assert report["oldest_stuck"]["stripe"]["age_seconds"] >= 3 * 3600 - 5
    assert report["dead"]["count"] == 1 and report["dead"]["events"][0]["provider"] == "monetbil"
    code, out, _ = _run(capsys, "status")
    assert code == 0 and "oldest stuck stripe event: created 3h" in out and "dead events: 1" in out


def test_replay_reports_and_audits(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=10)
    code, out, _ = _run(capsys, "replay", str(dead))
    assert code == 0 and f"replayed #{dead}" in out
    assert fetch_event(db_env, dead).status is EventStatus.PROCESSED
    code, out, _ = _run(capsys, "replay", str(dead + 1000), str(dead))
    assert code == 1
    assert f"not replayed #{dead + 1000}: unknown event id" in out
    assert f"not replayed #{dead}: it is processed: only dead, processed" not in out
    assert f"replayed #{dead}" in out  # a processed event may go round again


def test_replay_says_what_each_event_became_and_fails_when_one_dies_again(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = event_factory(
        Provider.MONETBIL,
        status=EventStatus.DEAD,
        attempts=1,
        payload=monetbil_payload("tx_bad", amount="abc"),
    )
    code, out, _ = _run(capsys, "replay", str(broken))
    assert code == 1
    assert f"replayed #{broken} monetbil" in out and ": dead (" in out
    (run,) = _runs(db_env)
    assert f"audit: sweep #{run.id}" in out and run.kind == "replay"


def test_dismiss_reports_audits_and_refuses(
    db_env: Engine, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=10)
    done = event_factory(Provider.STRIPE, status=EventStatus.PROCESSED)
    code, out, err = _run(capsys, "dismiss", str(dead), str(done), "--reason", "refunded by hand")
    assert code == 1 and _error_lines(err) == []
    assert f"dismissed #{dead} stripe" in out
    why = "it is processed: only dead or expired stuck events are dismissed"
    assert f"not dismissed #{done}: {why}" in out
    (run,) = _runs(db_env)
    assert f"audit: sweep #{run.id}" in out
    assert (run.kind, run.note) == ("dismiss", "refunded by hand")
    assert fetch_event(db_env, dead).status is EventStatus.DISMISSED

    code, out, _ = _run(capsys, "dismiss", str(done), "--reason", "again")
    assert code == 1 and "audit: none (nothing dismissed)" in out
    assert len(_runs(db_env)) == 1  # every id refused: no audit row

    code, out, _ = _run(capsys, "status")
    assert "dismissed" in out.splitlines()[0]


def _runs(engine: Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.sweep_runs).order_by(store.sweep_runs.c.id)))


def test_demo_runs_a_sweep_from_the_installed_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("payments-pipeline")
    proc = subprocess.run(
        [str(exe), "--log-level", "warning", "demo", "--directory", str(tmp_path / "d"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        # The demo processes what it claims whatever the shell exports.
        env={**os.environ, "PAYMENTS_DISPATCH": "table"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["total"] == {"scanned": 8, "dispatched": 8, "skipped": 0, "expired": 2}
    demo_db = store.make_engine(f"sqlite:///{tmp_path / 'd' / 'payments.sqlite3'}")
    with demo_db.connect() as conn:
        status = store.webhook_events.c.status
        counts: dict[str, int] = dict(
            conn.execute(sa.select(status, sa.func.count()).group_by(status)).all()
        )
    demo_db.dispose()
    # the 8 dispatched and the 2 already done; the fresh and the expired ones stay untouched
    assert counts == {"processed": 10, "received": 4}
    assert {e["reason"] for e in doc["events"]} == {
        "dispatched_at_null",
        "dispatch_lost",
        "failed_old",
        "processing_stalled",
    }


def test_worker_refuses_the_inline_engine_in_one_line(
    db_env: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYMENTS_DISPATCH", raising=False)
    code, _, err = _run(capsys, "worker")
    assert code == 1
    assert _error_lines(err) == [
        "error: PAYMENTS_DISPATCH is inline: events are processed where they are claimed, so "
        "there is nothing for a worker to do; set PAYMENTS_DISPATCH=table or celery to run workers"
    ]


def test_sweep_follows_the_dispatch_setting(
    db_env: Engine,
    event_factory: EventFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event_id = event_factory(Provider.STRIPE)
    monkeypatch.setenv("PAYMENTS_DISPATCH", "table")
    code, out, _ = _run(capsys, "--log-level", "warning", "requeue-stuck-webhooks", "--json")
    assert code == 0 and json.loads(out)["total"]["dispatched"] == 1
    # table: the claim is all the sweep does; the event waits for a worker
    claimed = fetch_event(db_env, event_id)
    assert claimed.status is EventStatus.RECEIVED and claimed.dispatched_at is not None
    monkeypatch.setenv("PAYMENTS_DISPATCH", "inline")
    event_id = event_factory(Provider.STRIPE)
    code, _, _ = _run(capsys, "--log-level", "warning", "requeue-stuck-webhooks", "--json")
    assert code == 0 and fetch_event(db_env, event_id).status is EventStatus.PROCESSED

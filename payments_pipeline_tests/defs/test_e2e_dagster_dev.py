"""End to end: `dagster dev` on a temporary Dagster home, a launch through the webserver's GraphQL
API with a per-provider override (the launchpad's `launchRun` mutation), the run queued, dequeued
by the daemon and executed, and its materialization metadata read back over GraphQL; then a replay
of a dead event launched the same way. A backfill of 3 days of `stripe_payment_drift` launched the
way the partitions page does (`launchPartitionBackfill`), against our fake Stripe payments API: one
run per day, at most 2 at a time. And the viewers' webserver (`dagster-webserver --read-only`)
refusing the same launch.

Everything it starts runs in its own process group, terminated at the end whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from payments_pipeline.defs.launch import REPO, prepare_demo_home
from payments_pipeline.models import EventStatus, Provider

from ..conftest import EventFactory
from ..drift.support import T0
from ..fakes._http import QuietHandler
from ..fakes.stripe_payments_api import FakeStripePaymentsAPI
from ..helpers import ago, fetch_event
from .conftest import sweep_rows, url_of

SELECTOR = {
    "repositoryLocationName": "payments_pipeline",
    "repositoryName": "__repository__",
    "jobName": "requeue_stuck_webhooks",
}


def _mutation(signature: str, call: str, *answers: str) -> str:
    """A mutation asking for its answer's `__typename` and, for each type it may answer with
    (Dagster's own errors included), what that says."""
    cases = (*answers, "PythonError { message }", "UnauthorizedError { message }")
    lines = "\n".join(f"    ... on {case}" for case in cases)
    return f"mutation {signature} {{\n  {call} {{\n    __typename\n{lines}\n  }}\n}}"


LAUNCH = _mutation(
    "Launch($params: ExecutionParams!)",
    "launchRun(executionParams: $params)",
    "LaunchRunSuccess { run { runId } }",
    "RunConfigValidationInvalid { errors { message } }",
)
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status
      tags { key value }
      assetMaterializations {
        assetKey { path }
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on TableMetadataEntry { table { records } }
        }
      }
    }
  }
}"""
SCHEMA = """
query Schema($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) { ... on RunConfigSchema { rootDefaultYaml } }
}"""
RUNS = """
query Runs {
  runsOrError { ... on Runs { results { runId } } }
}"""
REPOSITORY = """
query Repo($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    ... on Repository {
      jobs { name }
      schedules { name cronSchedule }
      sensors { name }
      assetNodes { assetKey { path } groupName }
    }
  }
}"""


BACKFILL = _mutation(
    "Backfill($params: LaunchBackfillParams!)",
    "launchPartitionBackfill(backfillParams: $params)",
    "LaunchBackfillSuccess { backfillId }",
    "PartitionSetNotFoundError { message }",
)
BACKFILL_RUNS = """
query BackfillRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results {
        runId
        status
        startTime
        endTime
        tags { key value }
        assetMaterializations {
          assetKey { path }
          partition
          metadataEntries { label ... on IntMetadataEntry { intValue } }
        }
      }
    }
  }
}"""


def _pipeline(selector: dict[str, str]) -> dict[str, str]:
    """A launch selector as the older `PipelineSelector` input spells it."""
    return {
        "repositoryLocationName": selector["repositoryLocationName"],
        "repositoryName": selector["repositoryName"],
        "pipelineName": selector["jobName"],
    }


def _sigint_default() -> None:
    """`dagster dev` maps SIGTERM onto its SIGINT handler, and a job started in the background by
    a non-interactive shell inherits SIGINT ignored: restore it, so SIGTERM stops it cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dagit:
    """A GraphQL client for the webserver, with a deadline on every wait."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.process = process
        self.log = log

    def query(self, query: str, *, python_error: bool = False, **variables: Any) -> dict[str, Any]:
        """The response's `data`; `python_error`: the webserver answers a mutation that raised in
        the code location (a `PythonError` result) with HTTP 500 and the data."""
        response = httpx.post(self.url, json={"query": query, "variables": variables}, timeout=30)
        if not (python_error and response.status_code == 500):
            response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return dict(body["data"])

    def wait(self, what: str, seconds: float, probe: Any) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dagster dev exited early:\n{self.log.read_text()[-3000:]}")
            try:
                found = probe()
            except httpx.HTTPError:
                found = None
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")


@contextlib.contextmanager
def _serve(argv: list[str], db_env: Engine, tmp_path: Path, name: str) -> Iterator[Dagit]:
    """`argv` + the port, on a temporary Dagster home, in its own process group."""
    port = _free_port()
    home = prepare_demo_home(tmp_path)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PAYMENTS_DATABASE_URL": url_of(db_env),
        "PAYMENTS_STUCK_REQUEUE_ENABLED": "false",  # no schedule or sensor ticks in this test
    }
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: webserver, daemon, code servers
            preexec_fn=_sigint_default,
        )
    try:
        yield Dagit(port, process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # children that outlived their parent
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def dagster_dev(db_env: Engine, tmp_path: Path) -> Iterator[Dagit]:
    dagster = str(Path(sys.executable).with_name("dagster"))
    with _serve([dagster, "dev"], db_env, tmp_path, "dagster-dev") as dagit:
        yield dagit


class _HeldStripePaymentsAPI(FakeStripePaymentsAPI):
    """Every request held until `release` is set (outside the fake's lock, so the requests of
    several runs wait side by side; `waiting` counts them): the runs of a backfill stay in progress
    together for as long as the test looks at them, however slowly the machine launches them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waiting = 0
        self._waiting_lock = threading.Lock()

    def _handle(self, handler: QuietHandler) -> None:
        with self._waiting_lock:
            self.waiting += 1
        try:
            self.release.wait(120)
        finally:
            with self._waiting_lock:
                self.waiting -= 1
        super()._handle(handler)


@pytest.fixture
def held_stripe_api() -> Iterator[_HeldStripePaymentsAPI]:
    with _HeldStripePaymentsAPI() as api:
        try:
            yield api
        finally:
            api.release.set()


@pytest.fixture
def dagster_dev_with_stripe(
    db_env: Engine,
    tmp_path: Path,
    held_stripe_api: FakeStripePaymentsAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Dagit]:
    """`dagster dev` whose runs ask our fake Stripe payments API (the environment it inherits);
    the hourly reconciliation schedule stays stopped, so only the backfill's runs ask it."""
    monkeypatch.setenv("STRIPE_API_KEY", held_stripe_api.api_key)
    monkeypatch.setenv("PAYMENTS_STRIPE_API_BASE", held_stripe_api.url)
    monkeypatch.setenv("PAYMENTS_RECONCILE_ENABLED", "false")
    dagster = str(Path(sys.executable).with_name("dagster"))
    with _serve([dagster, "dev"], db_env, tmp_path, "dagster-dev") as dagit:
        yield dagit


@pytest.fixture
def dagster_viewer(db_env: Engine, tmp_path: Path) -> Iterator[Dagit]:
    """The viewers' webserver: `dagster-webserver --read-only`, no daemon."""
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    with _serve([webserver, "--read-only"], db_env, tmp_path, "viewer") as dagit:
        yield dagit


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_launch_from_the_webserver_with_a_provider_override(
    dagster_dev: Dagit, db_env: Engine, event_factory: EventFactory
) -> None:
    stripe = event_factory(Provider.STRIPE, dispatched_at=ago(minutes=30))
    monetbil = event_factory(Provider.MONETBIL, dispatched_at=ago(minutes=30))
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=5)
    selector = {k: v for k, v in SELECTOR.items() if k != "jobName"}
    repo = dagster_dev.wait(
        "the code location",
        120,
        lambda: dagster_dev.query(REPOSITORY, selector=selector)["repositoryOrError"].get("jobs"),
    )
    data = dagster_dev.query(REPOSITORY, selector=selector)["repositoryOrError"]
    assert "requeue_stuck_webhooks" in {j["name"] for j in repo}
    assert sorted(data["schedules"], key=lambda s: s["name"]) == [
        {"name": "reconcile_stripe_events_hourly", "cronSchedule": "17 * * * *"},
        {"name": "requeue_stuck_webhooks_every_5_minutes", "cronSchedule": "*/5 * * * *"},
    ]
    assert {s["name"] for s in data["sensors"]} == {
        "webhook_events_sensor",
        "sweep_run_failure_sensor",
    }
    assert {
        "requeue_stuck_webhooks",
        "replay_webhook_events",
        "reconcile_stripe_events",
        "reconcile_monetbil_payments",
    } <= {j["name"] for j in repo}
    assert {n["groupName"] for n in data["assetNodes"]} == {
        "webhook_requeue",
        "webhook_health",
        "webhook_reconciliation",
    }

    def launch(provider: str, minutes: int = 10, python_error: bool = False) -> dict[str, Any]:
        params = {
            "selector": SELECTOR,
            "runConfigData": {
                "resources": {"sweep": {"config": {"minutes": minutes, "provider": provider}}}
            },
        }
        data = dagster_dev.query(LAUNCH, python_error=python_error, params=params)
        return dict(data["launchRun"])

    refused = launch("paypal")
    assert refused["__typename"] == "RunConfigValidationInvalid", refused
    # What the launchpad shows on "Launch Run": the refusal, and no run was created.
    too_soon = launch("monetbil", minutes=0, python_error=True)
    assert too_soon["__typename"] == "PythonError", too_soon
    # One sentence after the error's class: no "Stack Trace:" inside the message the dialog
    # shows first.
    message = too_soon["message"].strip()
    assert "\n" not in message, too_soon
    assert message.endswith(
        ".DagsterInvalidConfigError: minutes must be a whole number >= 1, got 0"
    ), too_soon
    # The replay launchpad's prefilled config (the schema's defaults) asks for nothing: refused
    # the same way, with what to fill in.
    replay_selector = {**SELECTOR, "jobName": "replay_webhook_events"}
    prefilled = yaml.safe_load(
        dagster_dev.query(SCHEMA, selector=_pipeline(replay_selector))["runConfigSchemaOrError"][
            "rootDefaultYaml"
        ]
    )
    assert prefilled == {"event_ids": [], "limit": 1000, "provider": "all", "status": "dead"}
    params = {"selector": replay_selector, "runConfigData": prefilled}
    nothing = dagster_dev.query(LAUNCH, python_error=True, params=params)["launchRun"]
    assert nothing["__typename"] == "PythonError", nothing
    assert "nothing to replay: fill in event_ids" in nothing["message"].splitlines()[0], nothing
    assert dagster_dev.query(RUNS)["runsOrError"]["results"] == []
    launched = launch("monetbil")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> dict[str, Any] | None:
        run = dagster_dev.query(RUN, runId=run_id)["runOrError"]
        return dict(run) if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} else None

    run = dagster_dev.wait(f"run {run_id}", 120, finished)
    assert run["status"] == "SUCCESS", run
    assert {"key": "payments_pipeline/sweep", "value": "requeue"} in run["tags"]
    metadata = {
        m["assetKey"]["path"][0]: {e["label"]: e for e in m["metadataEntries"]}
        for m in run["assetMaterializations"]
    }
    summary = metadata["requeue_sweep_summary"]
    assert summary["dispatched"]["text"] == "1"  # a total: text, not plotted
    assert summary["monetbil_dispatched"]["intValue"] == 1 and "stripe_dispatched" not in summary
    (event,) = [json.loads(r) for r in summary["events"]["table"]["records"]]
    assert (event["id"], event["reason"], event["outcome"]) == (
        monetbil,
        "dispatch_lost",
        "dispatched",
    )
    assert metadata["stuck_webhook_events"]["found_monetbil"]["intValue"] == 1

    assert fetch_event(db_env, monetbil).status is EventStatus.PROCESSED
    assert fetch_event(db_env, stripe).status is EventStatus.RECEIVED
    (row,) = sweep_rows(db_env)
    assert (row.trigger, row.provider, row.dagster_run_id) == ("ui", "monetbil", run_id)
    assert metadata["webhook_backlog"]["dead"]["intValue"] == 1

    # A replay of the dead event, as the launchpad launches it (the job's flat run config).
    replay = {
        "selector": {**SELECTOR, "jobName": "replay_webhook_events"},
        "runConfigData": {"event_ids": [dead, dead + 1000]},
    }
    launched = dagster_dev.query(LAUNCH, params=replay)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    run = dagster_dev.wait(f"replay run {run_id}", 120, finished)
    assert run["status"] == "SUCCESS", run
    assert fetch_event(db_env, dead).status is EventStatus.PROCESSED  # inline: processed there
    replay_row = sweep_rows(db_env)[-1]
    assert (replay_row.trigger, replay_row.dagster_run_id) == ("ui", run_id)
    assert (replay_row.dispatched, replay_row.skipped) == (1, 1)


def _most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most runs in progress at one moment, from their start and end times (a run that
    ends when another starts does not overlap it)."""
    edges = sorted(
        [(r["startTime"], 1) for r in runs] + [(r["endTime"], -1) for r in runs],
        key=lambda edge: (edge[0], edge[1]),
    )
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_backfill_of_3_drift_days_runs_one_run_a_day_at_most_2_at_once(
    dagster_dev_with_stripe: Dagit, held_stripe_api: _HeldStripePaymentsAPI
) -> None:
    dagit, api = dagster_dev_with_stripe, held_stripe_api
    days = ["2026-12-03", "2026-12-04", "2026-12-05"]
    for offset in (-2, -1, 0):  # one payment a day that never reached us
        api.add_payment_intent(created=T0 + offset * 86_400 + 3600, amount=500)
    selector = {k: v for k, v in SELECTOR.items() if k != "jobName"}
    dagit.wait(
        "the code location",
        120,
        lambda: dagit.query(REPOSITORY, selector=selector)["repositoryOrError"].get("jobs"),
    )
    params = {"assetSelection": [{"path": ["stripe_payment_drift"]}], "partitionNames": days}
    launched = dagit.query(BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    run_filter = {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}

    def backfill_runs() -> list[dict[str, Any]]:
        return list(dagit.query(BACKFILL_RUNS, filter=run_filter)["runsOrError"]["results"])

    def in_progress(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in runs if r["status"] in {"STARTING", "STARTED"}]

    # The backfill daemon looks at new backfills every 30 s, then queues one run a day. Two runs
    # start and ask the fake, which holds them: both stay in progress.
    def two_asking() -> list[dict[str, Any]] | None:
        runs = backfill_runs()
        assert len(in_progress(runs)) <= 2, runs
        started = [r for r in runs if r["status"] == "STARTED"]
        return runs if len(started) == 2 and api.waiting >= 2 else None

    runs = dagit.wait(f"two runs of backfill {backfill_id} in progress", 120, two_asking)
    assert len(runs) == 3
    # While they are, the third stays queued (the shipped dagster.yaml's dagster/backfill limit;
    # without it the daemon launches it within seconds: seen failing here with it removed).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        runs = backfill_runs()
        assert len(in_progress(runs)) == 2, runs
        time.sleep(0.5)
    assert sorted(r["status"] for r in runs) == ["QUEUED", "STARTED", "STARTED"], runs
    api.release.set()

    def finished() -> list[dict[str, Any]] | None:
        runs = backfill_runs()
        assert len(in_progress(runs)) <= 2, runs
        done = [r for r in runs if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}]
        return runs if len(done) == len(runs) == len(days) else None

    runs = dagit.wait(f"the runs of backfill {backfill_id}", 90, finished)
    assert {r["status"] for r in runs} == {"SUCCESS"}, runs  # the red checks fail no run
    by_day = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        (materialization,) = run["assetMaterializations"]  # one partition per run
        assert materialization["assetKey"]["path"] == ["stripe_payment_drift"]
        assert materialization["partition"] == tags["dagster/partition"]
        entries = {e["label"]: e.get("intValue") for e in materialization["metadataEntries"]}
        assert (entries["compared"], entries["missing_here"], entries["status"]) == (1, 1, 0)
        by_day[tags["dagster/partition"]] = run
    assert sorted(by_day) == days
    # From the runs' own start and end times: 2 at once, never 3; the third waited for a turn.
    spans = sorted((r["startTime"], r["endTime"]) for r in runs)
    assert _most_at_once(runs) == 2, spans
    assert spans[2][0] >= min(spans[0][1], spans[1][1]), spans
    assert api.paths == {"/v1/payment_intents": 3, "/v1/charges": 3}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_read_only_webserver_refuses_a_launch(
    dagster_viewer: Dagit, db_env: Engine, event_factory: EventFactory
) -> None:
    dead = event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=5)
    selector = {k: v for k, v in SELECTOR.items() if k != "jobName"}
    dagster_viewer.wait(
        "the code location",
        120,
        lambda: dagster_viewer.query(REPOSITORY, selector=selector)["repositoryOrError"].get(
            "jobs"
        ),
    )
    for job, config in (
        ("requeue_stuck_webhooks", {"resources": {"sweep": {"config": {"minutes": 5}}}}),
        ("replay_webhook_events", {"event_ids": [dead]}),
    ):
        params = {"selector": {**SELECTOR, "jobName": job}, "runConfigData": config}
        refused = dagster_viewer.query(LAUNCH, params=params)["launchRun"]
        assert refused["__typename"] == "UnauthorizedError", refused
    assert dagster_viewer.query(RUNS)["runsOrError"]["results"] == []
    assert sweep_rows(db_env) == []
    assert fetch_event(db_env, dead).status is EventStatus.DEAD

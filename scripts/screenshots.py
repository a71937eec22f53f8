"""The visual audit, seen in a real browser: screenshots of the Dagster UI on a demo home.

Not part of CI. It runs the demo (`payments-pipeline demo`: a sweep through the job, trigger
`cli`), starts `dagster dev` on the demo's Dagster home (127.0.0.1, a free port), adds stuck events
between launches and launches three sweeps through the GraphQL API as the launchpad does (per-
provider overrides, trigger `ui`), so the plots have points that differ, then drives headless
Chromium (Selenium, /usr/bin/chromium + /usr/bin/chromedriver) and saves under docs/img/:

    run-page.png            the last run: steps, and the materializations with their metadata
    run-summary-event.png   the same run's log filtered to the summary's materialization
    asset-events.png        requeue_sweep_summary, its latest materialization as a table
    asset-plots.png         requeue_sweep_summary's overview: numeric metadata plotted over runs
    asset-checks.png        the three checks on the summary, the failing one open
    launchpad.png           the sweep job's launchpad, opened as a person does ("Materialize all" ▾,
                            "Open launchpad")
    replay-launchpad.png    the replay job's Launchpad tab
    replay-run.png          a replay's run: what it replayed and refused, and why (its report)
    run-summary-report.png  the sweep at a glance: the summary's `sweep` report
    backlog-plots.png       webhook_backlog's overview: the backlog plotted over sweeps

With `--only reconcile` (or by default, after those), against our fakes of Stripe's Events and
PaymentIntents/Charges APIs served from this process on one base URL (STRIPE_API_KEY and
PAYMENTS_STRIPE_API_BASE in dagster dev's environment): payments of the last 3 UTC days delivered
through the receiver (signed webhooks), some never delivered, a refund made at Stripe only; a run of
reconcile_stripe_events since yesterday, then a backfill of stripe_payment_drift over the 3 days:

    reconcile-run.png       the reconciliation's run: its report ("[Show Markdown]"), ATTENTION
    reconcile-check.png     the same run's warning check no_missed_deliveries
    drift-partitions.png    stripe_payment_drift's partitions: the day that drifted selected
    drift-check.png         the check payments_match_stripe failed on that day
    drift-run.png           that day's run: its report (ATTENTION, the launchpad config to run)

Everything it starts is stopped at the end (process group), also on error. Selenium is a dev
dependency (the browser test, payments_pipeline_tests/defs/test_browser.py, uses it too):

    apt-get install -y chromium chromium-driver
    uv run --frozen python scripts/screenshots.py [--out docs/img] [--only sweep|reconcile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from payments_pipeline import store
from payments_pipeline.cli import main as payments_pipeline
from payments_pipeline.config import DEFAULT_RECONCILE_START_DATE
from payments_pipeline.models import PROVIDERS, EventStatus, utcnow
from payments_pipeline.providers.samples import monetbil_notification, stripe_event
from payments_pipeline_tests.drift.support import receiving
from payments_pipeline_tests.fakes._stripe_api import FakeStripeAPI
from payments_pipeline_tests.fakes.stripe_events_api import FakeStripeEventsAPI
from payments_pipeline_tests.fakes.stripe_payments_api import FakeStripePaymentsAPI

REPO = Path(__file__).resolve().parents[1]
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""
BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams:
  $params) { __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } }
}"""
BACKFILL_RUNS = """query($filter: RunsFilter!) { runsOrError(filter: $filter) { ... on Runs {
  results { runId status tags { key value } } } } }"""
STRIPE_KEY = "sk_test_screenshots_4242"


def sigint_default() -> None:
    """`dagster dev` maps SIGTERM onto its SIGINT handler; a background shell job inherits SIGINT
    ignored, which would make SIGTERM a no-op."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(port: int, query: str, **variables: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    if "errors" in body:
        raise RuntimeError(body["errors"])
    return dict(body["data"])


def add_stuck_events(database_url: str, batch: str, stripe: int, monetbil: int) -> None:
    """Stuck events of every reason, so each sweep finds a different mix."""
    now = utcnow()
    created = int((now - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC).timestamp())
    rows: list[dict[str, Any]] = []
    for provider, count in (("stripe", stripe), ("monetbil", monetbil)):
        for i in range(count):
            state: dict[str, Any] = [
                {},
                {"dispatched_at": now - dt.timedelta(minutes=20)},
                {
                    "status": EventStatus.FAILED.value,
                    "attempts": 1,
                    "dispatched_at": now - dt.timedelta(minutes=30),
                    "last_error": "TimeoutError: upstream",
                },
            ][i % 3]
            key = f"{batch}_{provider}_{i}"
            if provider == "stripe":
                event_type = "payment_intent.succeeded"
                payload = stripe_event(
                    f"evt_{key}", reference=f"pi_{key}", amount=1500, created=created
                )
            else:
                event_type = "payment.success"
                payload = monetbil_notification(
                    f"tx_{key}", payment_ref=f"order-{key}", amount="750"
                )
            rows.append(
                {
                    "provider": provider,
                    "provider_event_id": key,
                    "event_type": event_type,
                    "payload": payload,
                    "created_at": now - dt.timedelta(minutes=40),
                    "updated_at": now,
                    **state,
                }
            )
    engine = store.make_engine(database_url)
    try:
        store.in_transaction(engine, lambda conn: store.insert_events(conn, rows=rows))
    finally:
        engine.dispose()


@contextlib.contextmanager
def dagster_dev(
    home: Path, database_url: str, port: int, log: Path, extra: dict[str, str] | None = None
) -> Iterator[None]:
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "PAYMENTS_DATABASE_URL": database_url,
        "PAYMENTS_STUCK_REQUEUE_ENABLED": "false",  # no ticks: the screenshots stay the same
        "PAYMENTS_RECONCILE_ENABLED": "false",  # nor the hourly reconciliation's
        **(extra or {}),
    }
    dagster = Path(sys.executable).with_name("dagster")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=sigint_default,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"dagster dev exited: see {log}")
            with contextlib.suppress(Exception):
                repo = graphql(
                    port,
                    "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }",
                )
                if repo["repositoriesOrError"].get("nodes"):
                    break
            time.sleep(1)
        else:
            raise RuntimeError(f"dagster dev did not answer in 120 s: see {log}")
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def launch(port: int, provider: str, minutes: int = 10) -> str:
    config = {"resources": {"sweep": {"config": {"minutes": minutes, "provider": provider}}}}
    return launch_job(port, "requeue_stuck_webhooks", config)


def add_dead_events(database_url: str, count: int) -> list[int]:
    """Stripe events whose retry budget is spent (`dead`), for the replay; their ids."""
    now = utcnow()
    rows = [
        {
            "provider": "stripe",
            "provider_event_id": f"evt_dead_{i}",
            "event_type": "payment_intent.succeeded",
            "payload": stripe_event(f"evt_dead_{i}", reference=f"pi_dead_{i}", amount=900),
            "status": EventStatus.DEAD.value,
            "attempts": 5,
            "dispatched_at": now - dt.timedelta(hours=2),
            "last_error": "TimeoutError: upstream",
            "created_at": now - dt.timedelta(hours=3),
            "updated_at": now - dt.timedelta(hours=1),
        }
        for i in range(count)
    ]
    engine = store.make_engine(database_url)
    try:
        store.in_transaction(engine, lambda conn: store.insert_events(conn, rows=rows))
        with engine.connect() as conn:
            found = store.list_event_states(
                conn, status=EventStatus.DEAD, providers=PROVIDERS, limit=count + 10
            )
    finally:
        engine.dispose()
    return [state.event.id for state in found]


def launch_job(port: int, job: str, config: dict[str, Any]) -> str:
    params = {
        "selector": {
            "repositoryLocationName": "payments_pipeline",
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": config,
    }
    result = graphql(port, LAUNCH, params=params)["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(result)
    run_id = str(result["run"]["runId"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = graphql(port, STATUS, runId=run_id)["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            if status != "SUCCESS":
                raise RuntimeError(f"run {run_id} ended {status}")
            return run_id
        time.sleep(1)
    raise RuntimeError(f"run {run_id} did not finish in 120 s")


class FakeStripe(FakeStripeAPI):
    """Our two fakes of Stripe's API (Events; PaymentIntents and Charges) behind one base URL and
    one key, as Stripe serves them: each request is answered by the fake that owns its path."""

    def __init__(self, api_key: str = STRIPE_KEY) -> None:
        self.events = FakeStripeEventsAPI(api_key)  # their own servers are never started
        self.payments = FakeStripePaymentsAPI(api_key)
        self.list_paths = self.events.list_paths + self.payments.list_paths
        super().__init__(api_key)

    def route(self, command: str, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        fake: FakeStripeAPI = self.events if path.startswith("/v1/events") else self.payments
        with fake._lock:
            return fake.route(command, path, params)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for fake in (self.events, self.payments):
            fake.__exit__(*exc)


def drift_days(today: dt.date) -> list[dt.date]:
    """The 3 complete UTC days before `today`: the partitions the screenshots materialize."""
    return [today - dt.timedelta(days=n) for n in (3, 2, 1)]


def seed_stripe(database_url: str, stripe: FakeStripe, days: list[dt.date]) -> None:
    """Payments at Stripe on `days` (and today), their events listed by the Events API. Most were
    delivered through the receiver (signed webhooks, inline processing); on the middle day one
    payment's event never reached us and a refund of 500 was made at Stripe whose
    `charge.refunded` never reached us either (the drift); on the last day two events never
    reached us (what the reconciliation since that day recovers)."""

    def at(day: dt.date, hour: int) -> int:
        return int(dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC).timestamp())

    now = int(time.time())
    d1, d2, d3 = days
    # (created, amount, status, delivered); `requires_payment_method` is a declined card
    plan = [
        (at(d1, 9), 2500, "succeeded", True),
        (at(d1, 13), 1200, "succeeded", True),
        (at(d1, 16), 800, "requires_payment_method", True),
        (at(d1, 20), 4100, "succeeded", True),
        (at(d2, 8), 1500, "succeeded", True),  # refunded 500 at Stripe, below
        (at(d2, 11), 3000, "succeeded", True),
        (at(d2, 15), 900, "succeeded", False),  # missing here
        (at(d2, 18), 700, "processing", False),  # still in flight at Stripe: no event yet
        (at(d2, 21), 2000, "succeeded", True),
        (at(d3, 10), 1800, "succeeded", True),
        (at(d3, 12), 650, "succeeded", False),  # recovered by the reconciliation
        (at(d3, 15), 3200, "requires_payment_method", False),  # recovered too
        (at(d3, 19), 990, "succeeded", True),
        (now - 3 * 3600, 1400, "succeeded", True),
        (now - 3600, 560, "succeeded", True),
    ]
    api, events = stripe.payments, stripe.events
    engine = store.make_engine(database_url)
    try:
        with receiving(engine) as receiver:
            refunded = ""
            for created, amount, status, delivered in plan:
                failed = status == "requires_payment_method"
                pi = api.add_payment_intent(
                    created=created, amount=amount, status=status, failed=failed
                )
                refunded = refunded or (pi["id"] if created == at(d2, 8) else "")
                if status == "processing":
                    continue
                kind = "payment_intent.payment_failed" if failed else "payment_intent.succeeded"
                event = api.event_for(pi, kind)
                events.add(event, delivered=delivered)
                if delivered:
                    receiver.deliver(event)
            api.refund(refunded, 500)  # in the dashboard; its event never reached us
            events.add(
                api.event_for(refunded, "charge.refunded", created=at(d2, 14)), delivered=False
            )
    finally:
        engine.dispose()


def launch_backfill(port: int, asset: str, partitions: list[str]) -> dict[str, str]:
    """A backfill of `partitions` as the partitions page launches it; waits for its runs (one a
    partition, queued by the backfill daemon); their ids by partition."""
    params = {"assetSelection": [{"path": [asset]}], "partitionNames": partitions}
    launched = graphql(port, BACKFILL, params=params)["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(launched)
    run_filter = {"tags": [{"key": "dagster/backfill", "value": launched["backfillId"]}]}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = graphql(port, BACKFILL_RUNS, filter=run_filter)["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}]
        if len(done) == len(partitions):
            if any(r["status"] != "SUCCESS" for r in done):
                raise RuntimeError(f"backfill {launched['backfillId']}: {done}")
            return {
                next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r["runId"]
                for r in done
            }
        time.sleep(2)
    raise RuntimeError(f"backfill {launched['backfillId']} did not finish in 300 s")


class Browser:
    def __init__(self, base: str, profile: Path) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1200"):
            options.add_argument(flag)
        self.driver: WebDriver = webdriver.Chrome(
            service=Service("/usr/bin/chromedriver"), options=options
        )
        self.base = base
        self.dialog_dismissed = False

    def open(self, path: str, ready: str) -> None:
        """Load `path` and wait until `ready` (visible text) shows, then let the UI settle."""
        self.driver.get(self.base + path)
        self.wait_text(ready)
        self.dismiss_community_dialog()
        time.sleep(2)

    def wait_text(self, text: str, seconds: float = 30) -> None:
        xpath = f"//*[contains(normalize-space(text()), {json.dumps(text)})]"
        WebDriverWait(self.driver, seconds).until(ec.presence_of_element_located((By.XPATH, xpath)))

    def click_text(self, text: str) -> None:
        xpath = f"//button[contains(normalize-space(.), {json.dumps(text)})]"
        WebDriverWait(self.driver, 20).until(ec.element_to_be_clickable((By.XPATH, xpath))).click()
        time.sleep(2)

    def click_text_any(self, text: str) -> None:
        """Click the innermost element showing exactly `text` (list items are not buttons)."""
        xpath = f"//*[normalize-space(text())={json.dumps(text)}]"
        WebDriverWait(self.driver, 20).until(ec.element_to_be_clickable((By.XPATH, xpath))).click()
        time.sleep(2)

    def show_markdown(self) -> None:
        """Open the first "[Show Markdown]" of the page (a link that a "View full message" overlay
        may cover: clicked through JavaScript), and wait for its dialog."""
        xpath = "//*[normalize-space(text())='[Show Markdown]']"
        link = WebDriverWait(self.driver, 20).until(
            ec.presence_of_element_located((By.XPATH, xpath))
        )
        self.driver.execute_script("arguments[0].click()", link)
        time.sleep(2)

    def dismiss_community_dialog(self) -> None:
        """The UI's "Join the Dagster community" dialog pops up a moment after the first page of a
        fresh browser profile; skip it once (the UI remembers) before any screenshot."""
        if self.dialog_dismissed:
            return
        skip = (By.XPATH, "//button[normalize-space(.)='Skip']")
        with contextlib.suppress(NoSuchElementException, TimeoutException):
            WebDriverWait(self.driver, 15).until(ec.element_to_be_clickable(skip)).click()
            WebDriverWait(self.driver, 10).until(ec.invisibility_of_element_located(skip))
        self.dialog_dismissed = True

    def shoot(self, path: Path, height: int = 1200) -> None:
        self.driver.set_window_size(1600, height)
        time.sleep(1)
        self.driver.save_screenshot(str(path))
        print(f"saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")

    def quit(self) -> None:
        self.driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshots of the Dagster UI on a demo home.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--directory", type=Path, help="demo directory (default: a temporary one)")
    parser.add_argument(
        "--only",
        choices=("sweep", "reconcile"),
        help="take only these shots: the sweep's and the replay's, or the reconciliation's and the "
        "drift's (default: all)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sweep, reconcile = args.only in (None, "sweep"), args.only in (None, "reconcile")
    with (
        tempfile.TemporaryDirectory(prefix="pp_screenshots_") as tmp,
        contextlib.ExitStack() as stack,
    ):
        directory = (args.directory or Path(tmp) / "demo").resolve()
        if payments_pipeline(["--log-level", "error", "demo", "--directory", str(directory)]):
            raise SystemExit("the demo failed")
        database_url = f"sqlite:///{directory / 'payments.sqlite3'}"
        port = free_port()
        extra: dict[str, str] = {}
        days = drift_days(dt.datetime.now(dt.UTC).date())
        if reconcile:
            stripe = stack.enter_context(FakeStripe())
            extra = {"STRIPE_API_KEY": stripe.api_key, "PAYMENTS_STRIPE_API_BASE": stripe.url}
            if days[0] < DEFAULT_RECONCILE_START_DATE:  # the partitions must exist
                extra["PAYMENTS_RECONCILE_START_DATE"] = days[0].isoformat()
            seed_stripe(database_url, stripe, days)
        home = directory / "dagster_home"
        with dagster_dev(home, database_url, port, Path(tmp) / "dev.log", extra):
            browser = Browser(f"http://127.0.0.1:{port}", Path(tmp) / "chrome")
            try:
                if sweep:
                    run_id, replay_id = run_sweeps(database_url, port)
                    shoot_pages(browser, run_id, replay_id, args.out)
                if reconcile:
                    since = {"since": days[-1].isoformat()}  # yesterday: the last day's events
                    reconcile_id = launch_job(
                        port,
                        "reconcile_stripe_events",
                        {"ops": {"recovered_webhook_events": {"config": since}}},
                    )
                    keys = [day.isoformat() for day in days]
                    drift_runs = launch_backfill(port, "stripe_payment_drift", keys)
                    shoot_reconcile(browser, reconcile_id, keys[1], drift_runs[keys[1]], args.out)
            finally:
                browser.quit()
    return 0


def run_sweeps(database_url: str, port: int) -> tuple[str, str]:
    """Three sweeps with stuck events added between them, and a replay; the last sweep's run id
    and the replay's."""
    add_stuck_events(database_url, "b1", stripe=5, monetbil=2)
    launch(port, "stripe")
    add_stuck_events(database_url, "b2", stripe=3, monetbil=6)
    launch(port, "monetbil", minutes=15)
    add_stuck_events(database_url, "b3", stripe=7, monetbil=4)
    run_id = launch(port, "all")
    # a replay of the demo's dead events, and of an id that does not exist
    dead = add_dead_events(database_url, 2)
    replay_id = launch_job(port, "replay_webhook_events", {"event_ids": [*dead, 99999]})
    return run_id, replay_id


def shoot_pages(browser: Browser, run_id: str, replay_id: str, out: Path) -> None:
    browser.open(f"/runs/{run_id}?logs=type%3AASSET_MATERIALIZATION", "requeue_sweep_summary")
    browser.shoot(out / "run-page.png", height=1300)
    browser.open(f"/runs/{run_id}?logs=step%3Arequeue_sweep_summary", "requeue_sweep_summary")
    browser.shoot(out / "run-summary-event.png", height=1600)
    browser.open("/assets/requeue_sweep_summary?view=events", "duration_seconds")
    browser.shoot(out / "asset-events.png", height=1600)
    browser.open("/assets/requeue_sweep_summary?view=overview", "Metadata")
    browser.click_text("Plots")
    time.sleep(3)  # the charts draw after their data arrives
    browser.shoot(out / "asset-plots.png", height=2200)
    browser.open("/assets/requeue_sweep_summary?view=checks", "no_expired_stuck_events")
    browser.click_text_any("no_expired_stuck_events")
    browser.shoot(out / "asset-checks.png", height=1000)
    # The launchpad as a person reaches it: the job's page, the arrow beside "Materialize all",
    # "Open launchpad" (a job of assets has no Launchpad tab in Dagster 1.13).
    browser.open("/locations/payments_pipeline/jobs/requeue_stuck_webhooks", "Materialize all")
    caret = "//button[contains(normalize-space(.), 'Materialize all')]/following::button[1]"
    WebDriverWait(browser.driver, 20).until(ec.element_to_be_clickable((By.XPATH, caret))).click()
    time.sleep(1)
    browser.click_text_any("Open launchpad")
    browser.wait_text("Materialize")
    time.sleep(2)
    browser.shoot(out / "launchpad.png", height=900)
    # The replay job is a job of ops: its page has a Launchpad tab.
    browser.open("/locations/payments_pipeline/jobs/replay_webhook_events", "Launchpad")
    browser.click_text_any("Launchpad")
    time.sleep(2)
    browser.shoot(out / "replay-launchpad.png", height=900)
    browser.open(f"/runs/{replay_id}?logs=type%3ASTEP_OUTPUT", "replay_events")
    browser.show_markdown()
    browser.shoot(out / "replay-run.png", height=1100)
    browser.open(f"/runs/{run_id}?logs=step%3Arequeue_sweep_summary", "requeue_sweep_summary")
    browser.show_markdown()  # the first: the summary's `sweep` report
    browser.shoot(out / "run-summary-report.png", height=1300)
    browser.open("/assets/webhook_backlog?view=overview", "Metadata")
    browser.click_text("Plots")
    time.sleep(3)
    browser.shoot(out / "backlog-plots.png", height=2000)
    # No asset graph: in this headless Chromium the lineage canvas stays empty (the page loads,
    # the graph is never drawn), so a screenshot of it would show nothing.


def shoot_reconcile(
    browser: Browser, reconcile_id: str, drifted: str, drift_run_id: str, out: Path
) -> None:
    """The reconciliation's run and the drift's partitions, check and drifted day."""
    browser.open(f"/runs/{reconcile_id}?logs=type%3AASSET_MATERIALIZATION", "recovered_webhook")
    browser.show_markdown()  # the `report`: ATTENTION, what was listed, the recovered events
    browser.shoot(out / "reconcile-run.png", height=1000)
    browser.open("/assets/recovered_webhook_events?view=checks", "no_missed_deliveries")
    browser.click_text_any("no_missed_deliveries")
    browser.shoot(out / "reconcile-check.png", height=900)
    # The drift as a person reads it: the asset's page, its Partitions tab, the day that drifted
    # (its dot stays green: a failed check does not make a partition "Failed").
    browser.open("/assets/stripe_payment_drift", "Partitions")
    browser.click_text_any("Partitions")
    browser.click_text_any(drifted)
    browser.wait_text("ATTENTION")
    browser.shoot(out / "drift-partitions.png", height=1500)
    # The check's tab shows the latest evaluation (whichever day ran last); its Execution
    # history has the failed one.
    browser.click_text_any("Checks")
    browser.click_text_any("payments_match_stripe")
    browser.click_text_any("Execution history")
    browser.wait_text("Failed")
    browser.shoot(out / "drift-check.png", height=800)
    # That day's run, from the partition's "Run" link; its report in full.
    browser.click_text_any("Partitions")
    browser.click_text_any(drifted)
    browser.click_text_any(drift_run_id[:8])
    browser.wait_text("payments_match_stripe")
    time.sleep(2)
    browser.show_markdown()
    browser.shoot(out / "drift-run.png", height=1300)


if __name__ == "__main__":
    sys.exit(main())

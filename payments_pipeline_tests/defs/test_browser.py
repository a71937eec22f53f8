"""What a person reads in the Dagster UI, in a real browser (headless Chromium through Selenium):
the Runs list shows what a replay found (`payments_pipeline/found`), and the replay's report
opens with ATTENTION when its events died again.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them when missing). Without
them the test is skipped, with the reason, except in CI (`CI=true`), where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine

from ..conftest import EventFactory
from .conftest import dead_for_good
from .test_e2e_dagster_dev import LAUNCH, RUN, SELECTOR, Dagit, dagster_dev  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        why = f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI the browser test must run: {why}")
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1600,1200",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _text_shown(driver: WebDriver, text: str, seconds: float = 30) -> Any:
    """The innermost element showing `text`; fails with what the page shows instead."""
    xpath = f"//*[contains(text(), {json.dumps(text)})]"
    try:
        return WebDriverWait(driver, seconds).until(
            ec.visibility_of_element_located((By.XPATH, xpath))
        )
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"{text!r} not shown on {driver.current_url} in {seconds} s:\n{shown[:3000]}")


def _skip_community_dialog(driver: WebDriver) -> None:
    """A fresh profile's "Join the Dagster community" dialog, which covers the page: skip it."""
    skip = (By.XPATH, "//button[normalize-space(.)='Skip']")
    with contextlib.suppress(TimeoutException):
        WebDriverWait(driver, 5).until(ec.element_to_be_clickable(skip)).click()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_runs_list_and_a_replays_report_say_what_it_found(
    browser: WebDriver,
    dagster_dev: Dagit,  # noqa: F811
    db_env: Engine,
    event_factory: EventFactory,
) -> None:
    broken = dead_for_good(event_factory, 2)
    params = {
        "selector": {**SELECTOR, "jobName": "replay_webhook_events"},
        "runConfigData": {"event_ids": broken},
    }
    launched = dagster_dev.wait(
        "the code location",
        120,
        lambda: dagster_dev.query(LAUNCH, params=params)["launchRun"].get("run"),
    )
    run_id = launched["runId"]

    def finished() -> dict[str, Any] | None:
        run = dagster_dev.query(RUN, runId=run_id)["runOrError"]
        return dict(run) if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} else None

    assert dagster_dev.wait(f"replay run {run_id}", 60, finished)["status"] == "SUCCESS"
    base = dagster_dev.url.removesuffix("/graphql")

    # The Runs list: the green run says what it found, beside it (its found tag).
    browser.get(f"{base}/runs")
    _text_shown(browser, "2 replayed, 2 dead again")
    _skip_community_dialog(browser)

    # The replay's report ("[Show Markdown]" on its step output): ATTENTION first.
    browser.get(f"{base}/runs/{run_id}?logs=type%3ASTEP_OUTPUT")
    link = _text_shown(browser, "[Show Markdown]")
    browser.execute_script("arguments[0].click()", link)

    def report() -> str | None:
        dialogs = browser.find_elements(By.XPATH, "//*[@role='dialog']")
        return next((d.text for d in dialogs if "Replayed 2 of 2 asked" in d.text), None)

    text = WebDriverWait(browser, 20).until(lambda _: report())
    attention = text.find("ATTENTION: 2 replayed event(s) died again")
    assert 0 <= attention < text.index("Replayed 2 of 2 asked"), text

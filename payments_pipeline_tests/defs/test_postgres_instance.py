"""The production instance config (dagster_home/dagster.postgres.yaml): runs, event logs and
schedule state in PostgreSQL through dagster-postgres, with the same run-queue limit.

It runs on a database of its own, created on the server PAYMENTS_TEST_POSTGRES_URL names and
dropped afterwards; without that variable it skips, saying so.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.cli import main
from payments_pipeline.defs.launch import REPO
from payments_pipeline.models import EventStatus, Provider

from ..conftest import EventFactory
from ..helpers import fetch_event
from .conftest import execute_sweep, sweep_rows


@pytest.fixture
def dagster_postgres_url() -> Iterator[str]:
    """A fresh database for Dagster's storage, as a `postgresql+psycopg2://` URL."""
    admin_url = os.environ.get("PAYMENTS_TEST_POSTGRES_URL")
    if not admin_url:
        pytest.skip("PAYMENTS_TEST_POSTGRES_URL is not set: no PostgreSQL for the instance storage")
    name = f"pp_dagster_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(store.normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        url = sa.make_url(admin_url).set(drivername="postgresql+psycopg2", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def postgres_home(
    tmp_path: Path, dagster_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster_home" / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", dagster_postgres_url)
    return home


@pytest.mark.parametrize("backend", ["postgres"])
def test_the_sweep_job_runs_on_an_instance_stored_in_postgres(
    postgres_home: Path,
    dagster_postgres_url: str,
    db_env: Engine,
    event_factory: EventFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = event_factory(Provider.STRIPE)
    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert {"key": "payments_pipeline/sweep", "limit": 1} in queue.tag_concurrency_limits
        result = execute_sweep(instance, provider="stripe")
        assert result.success
    assert fetch_event(db_env, first).status is EventStatus.PROCESSED

    # The cron door on the same instance: a second run, recorded in PostgreSQL too.
    event_factory(Provider.MONETBIL)
    monkeypatch.setenv("DAGSTER_HOME", str(postgres_home))
    assert main(["--log-level", "warning", "requeue-stuck-webhooks", "--json"]) == 0
    capsys.readouterr()

    storage = sa.create_engine(dagster_postgres_url)
    try:
        with storage.connect() as conn:
            rows = conn.execute(sa.text("SELECT run_id, status FROM runs")).all()
            runs: dict[str, str] = {row.run_id: row.status for row in rows}
            materialized = conn.execute(
                sa.text("SELECT count(*) FROM event_logs WHERE dagster_event_type = :t"),
                {"t": "ASSET_MATERIALIZATION"},
            ).scalar_one()
    finally:
        storage.dispose()
    assert runs[result.run_id] == "SUCCESS" and len(runs) == 2
    assert materialized == 10  # five assets (the four phases and webhook_backlog), two runs
    assert [row.trigger for row in sweep_rows(db_env)] == ["ui", "cli"]

"""The CLI's door into Dagster: run the sweep, replay and dismiss jobs in this process, against a
Dagster instance.

`payments-pipeline requeue-stuck-webhooks`, `replay` and `dismiss` (with `DAGSTER_HOME` set) and
`payments-pipeline demo` import this lazily, so the CLI never imports Dagster itself. The run
carries `payments_pipeline/trigger=cli` and shows in the UI like any other, with the audit row it
wrote; the result comes back from the run's own output (`requeue_sweep_summary`,
`replay_events`, `dismiss_events`), so the CLI prints exactly what the core built.

`execute_in_process` does not go through the run queue, so the instance's one-sweep-at-a-time
limit does not cover it: this module refuses to start while a sweep run is queued or in progress.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from .. import store
from ..config import load_settings
from ..definitions import defs
from ..dismiss import DismissResult
from ..models import DispatchMode
from ..replay import ReplayResult
from ..sweep import SweepParams, SweepSummary
from . import dismiss, replay
from .jobs import JOB_NAME, active_sweep_runs, describe_run
from .resources import sweep_run_config
from .tags import TRIGGER_TAG

# The instance config the repo ships (dagster_home/dagster.yaml), copied into the demo's home.
REPO = Path(__file__).resolve().parents[2]
SHIPPED_INSTANCE_CONFIG = REPO / "dagster_home" / "dagster.yaml"
DEMO_HOME = "dagster_home"


class LaunchError(Exception):
    """The run was refused or failed; the message is one line for the CLI's `error:`."""


def prepare_demo_home(directory: Path) -> Path:
    """`<directory>/dagster_home` with the shipped instance config; its run history is kept."""
    if not SHIPPED_INSTANCE_CONFIG.is_file():
        raise LaunchError(
            f"the shipped instance config {SHIPPED_INSTANCE_CONFIG} is missing: "
            "run the demo from a checkout of the repository"
        )
    home = (directory / DEMO_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHIPPED_INSTANCE_CONFIG, home / "dagster.yaml")
    return home


def ui_command(dagster_home: Path, database_url: str) -> str:
    """The command that opens the Dagster UI on `dagster_home` (printed by the demo)."""
    dagster = Path(sys.executable).with_name("dagster")
    return (
        f"DAGSTER_HOME={shlex.quote(str(dagster_home))} "
        f"PAYMENTS_DATABASE_URL={shlex.quote(database_url)} "
        f"{shlex.quote(str(dagster))} dev -w {shlex.quote(str(REPO / 'workspace.yaml'))} "
        "-h 127.0.0.1 -p 3000"
    )


def _run_config(
    params: SweepParams, database_url: str, log_level: str, dispatch: DispatchMode | None
) -> dict[str, Any]:
    config = sweep_run_config(minutes=params.minutes, provider=params.provider)
    if dispatch is not None:
        config.setdefault("resources", {})["dispatcher"] = {"config": {"mode": dispatch.value}}
    return _with_database_and_loggers(config, database_url, log_level)


def _with_database_and_loggers(
    config: dict[str, Any], database_url: str, log_level: str
) -> dict[str, Any]:
    config.setdefault("resources", {})
    if sa.make_url(store.normalize_url(database_url)).password is None:
        # Says on the run page which database was swept. A URL with a password never goes into
        # the run config (the instance stores it): `payments_db` reads it through EnvVar.
        config["resources"]["payments_db"] = {"config": {"url": database_url}}
    elif load_settings().database_url != database_url:
        raise LaunchError("a database URL with a password must come from PAYMENTS_DATABASE_URL")
    # The core's own log lines already reach stderr through the CLI's logging; Dagster's event
    # lines stay on the run page (and on stderr too with --log-level debug).
    console = "DEBUG" if log_level.upper() == "DEBUG" else "CRITICAL"
    config["loggers"] = {"console": {"config": {"log_level": console}}}
    return config


def run_sweep_job(
    dagster_home: Path,
    *,
    database_url: str,
    params: SweepParams,
    log_level: str = "info",
    dispatch: DispatchMode | None = None,
) -> SweepSummary:
    """One sweep as a run of `requeue_stuck_webhooks` on the instance at `dagster_home`, handing
    its claims on through `dispatch` (None: the `dispatcher` resource's, PAYMENTS_DISPATCH)."""
    run_config = _run_config(params, database_url, log_level, dispatch)
    result = _execute(dagster_home, JOB_NAME, run_config, sweep=True)
    summary: SweepSummary = result.output_for_node("requeue_sweep_summary")
    return summary


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    """The root cause of the first failure, one line (the full trace is in the run's logs):
    Dagster wraps a step's exception in "Error occurred while executing op ..."."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if event.is_failure and error is not None:
            while error.cause is not None:
                error = error.cause
            return _one_line(error.message)
    return "see the run's logs in the Dagster UI"


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else "unknown error"


def run_replay_job(
    dagster_home: Path, *, database_url: str, event_ids: Sequence[int], log_level: str = "info"
) -> ReplayResult:
    """`payments-pipeline replay ID...` as a run of `replay_webhook_events`.

    Its run config is the job's flat mapping (`event_ids`), which has no `resources` nor
    `loggers` keys: the database comes through PAYMENTS_DATABASE_URL (set here to the CLI's own
    resolved URL, as `payments_db` reads it), and Dagster's console lines are kept off stderr
    unless --log-level debug (the core's own log lines still reach it)."""
    os.environ["PAYMENTS_DATABASE_URL"] = database_url
    quiet = log_level.upper() != "DEBUG"
    config = replay.replay_run_config(event_ids=event_ids)
    with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
        result = _execute(dagster_home, replay.JOB_NAME, config)
    found: ReplayResult = result.output_for_node(replay.OP_NAME)
    return found


def run_dismiss_job(
    dagster_home: Path,
    *,
    database_url: str,
    event_ids: Sequence[int],
    reason: str,
    log_level: str = "info",
) -> DismissResult:
    """`payments-pipeline dismiss ID... --reason TEXT` as a run of `dismiss_webhook_events`."""
    config = dismiss.dismiss_run_config(event_ids=list(event_ids), reason=reason)
    result = _execute(
        dagster_home,
        dismiss.JOB_NAME,
        _with_database_and_loggers(config, database_url, log_level),
    )
    found: DismissResult = result.output_for_node(dismiss.OP_NAME)
    return found


def _execute(
    dagster_home: Path, job_name: str, run_config: dict[str, Any], *, sweep: bool = False
) -> dg.ExecuteInProcessResult:
    """One in-process run of `job_name` on the instance at `dagster_home`, triggered `cli`;
    a `sweep` is refused while another is queued or in progress (module docstring)."""
    if not dagster_home.is_dir():
        raise LaunchError(f"DAGSTER_HOME={dagster_home} is not a directory")
    job = defs.resolve_job_def(job_name)
    with dg.DagsterInstance.from_config(str(dagster_home.resolve())) as instance:
        # Hold pooled connections to the instance's storage for this run, as the webserver does:
        # dagster-postgres otherwise opens one per statement, ~110 a run (~0.5 s; a no-op on
        # SQLite storage). See docs/PERFORMANCE.md (Dagster section).
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        active = active_sweep_runs(instance) if sweep else []
        if active:
            raise LaunchError(
                f"a sweep is already queued or in progress on the Dagster instance at "
                f"{dagster_home} ({describe_run(active[0])}): not starting another"
            )
        try:
            result = job.execute_in_process(
                run_config=run_config,
                instance=instance,
                tags={TRIGGER_TAG: "cli"},
                raise_on_error=False,
            )
        except dg.DagsterInvalidConfigError as exc:
            raise LaunchError(f"the run config was refused: {_one_line(str(exc))}") from None
    if not result.success:
        what = "sweep" if sweep else job_name
        raise LaunchError(f"{what} run {result.run_id} failed: {_first_error(result)}")
    return result

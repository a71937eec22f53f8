"""The job `requeue_stuck_webhooks`: the four phases and their checks, in one process.

In-process executor: the phases hand values over in memory and the run costs a fraction of a
second (the multiprocess executor would add ~15 s). The tag is the run-queue key the shipped
instance config limits to one run at a time (the seed's withoutOverlapping + onOneServer).
"""

from __future__ import annotations

from typing import TypeVar

import dagster as dg

from ..config import Settings
from .assets import GROUP
from .backlog import BACKLOG
from .tags import SWEEP_TAG, SWEEP_TAG_VALUE

JOB_NAME = "requeue_stuck_webhooks"

requeue_stuck_webhooks = dg.define_asset_job(
    name=JOB_NAME,
    # The sweep's four phases, then the backlog as the sweep left it.
    selection=dg.AssetSelection.groups(GROUP) | dg.AssetSelection.assets(BACKLOG),
    executor_def=dg.in_process_executor,
    # With run monitoring on (the shipped dagster.yaml), the daemon fails a sweep run still
    # "in progress" after an hour: a dead process cannot hold the sweep's turn forever.
    tags={SWEEP_TAG: SWEEP_TAG_VALUE, "dagster/max_runtime": "3600"},
    description=(
        "One requeue sweep: find stuck webhook events, claim them atomically, dispatch them again, "
        "audit. Override per run: resources: {sweep: {config: {minutes: 5, provider: stripe}}}."
    ),
)

# Runs in these states hold the sweep's turn: a tick, a sensor or the CLI must wait for them.
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def active_sweep_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """Sweep runs queued or in progress on this instance, oldest first."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=JOB_NAME, statuses=ACTIVE_STATUSES), limit=10
    )
    return sorted(records, key=lambda r: r.create_timestamp)


def describe_run(record: dg.RunRecord) -> str:
    """`run 1a2b3c4d (STARTED since 2025-01-01 10:00:00Z)`: what a skip or refusal names."""
    since = record.create_timestamp.strftime("%Y-%m-%d %H:%M:%SZ")
    return f"run {record.dagster_run.run_id[:8]} ({record.dagster_run.status.value} since {since})"


AutomationStatus = TypeVar("AutomationStatus", dg.DefaultScheduleStatus, dg.DefaultSensorStatus)


def automatic_status(settings: Settings, kind: type[AutomationStatus]) -> AutomationStatus:
    """The default status of the schedule and the sensor: RUNNING when the deployment asks for
    automatic requeueing (`PAYMENTS_STUCK_REQUEUE_ENABLED`), else STOPPED. A person's start or
    stop in the UI wins over it."""
    return kind.RUNNING if settings.stuck_requeue_enabled else kind.STOPPED

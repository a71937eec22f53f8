"""The asset `webhook_backlog` (group `webhook_health`): what is not done yet, plotted over time.

Each materialization carries integers Dagster plots across materializations: open events per
provider and status (`stripe_received`, `monetbil_dead`, ...; `processed` is history, not
backlog, and counting it would scan the table), `open`, `dead`, `expired`, how long the
longest-stuck event inside the window has been stuck (`longest_stuck_minutes`) and the oldest
stuck event's age since creation (`oldest_stuck_minutes`, as `payments-pipeline status` shows
it), per provider too, and, when a sweep refreshes it, the live and test-mode payments
(`payments_live`, `payments_test`); the first dead events as a table (`dead_events`).

Two writers: `webhook_events_sensor` reports a materialization from its tick when a count changed
or an age crossed a threshold since its last report (`refresh_events`, `digest`): a few
index-served queries, no run launched; and the sweep job materializes it as its last step (so
every sweep refreshes it). `refreshed_by` says which (`materialize`: a person's launch of it
alone). Its check,
`backlog_keeps_up` (warning), fails when an event has been stuck longer than twice the sweep's
`minutes`: a sweep every five minutes should never let that happen.
"""

import dataclasses
import hashlib
import json
from typing import Any

import dagster as dg

from .. import status
from ..config import Settings
from .checks import SUMMARY
from .resources import PaymentsDatabase
from .sweep_config import SweepSettings
from .tables import dead_table
from .tags import SWEEP_TAG

HEALTH_GROUP = "webhook_health"
BACKLOG = dg.AssetKey("webhook_backlog")
CHECK_NAME = "backlog_keeps_up"

CHECK_SPEC = dg.AssetCheckSpec(
    CHECK_NAME,
    asset=BACKLOG,
    description="Warning: an event has been stuck longer than twice the sweep's minutes.",
)


def backlog_metadata(backlog: status.Backlog, *, source: str) -> dict[str, Any]:
    return {
        **backlog.numbers(),
        "taken_at": dg.MetadataValue.text(f"{backlog.taken_at.isoformat()}Z"),
        "refreshed_by": dg.MetadataValue.text(source),
        **dead_table(backlog.dead_events),
    }


def _check(backlog: status.Backlog, minutes: int) -> tuple[bool, str, dict[str, int]]:
    limit = 2 * minutes
    longest = backlog.longest_stuck_seconds()
    metadata = {"longest_stuck_minutes": longest // 60, "limit_minutes": limit}
    if longest <= limit * 60:
        return (
            True,
            f"the longest-stuck event has waited {longest // 60} min (limit {limit} min)",
            metadata,
        )
    worst = {p: backlog.longest_stuck_seconds(p) // 60 for p in backlog.counts}
    per = ", ".join(f"{p} {m} min" for p, m in worst.items() if m)
    return (
        False,
        f"an event has been stuck {longest // 60} min, more than twice the sweep's minutes "
        f"({limit} min; {per}): sweeps are not running or not keeping up. Check that the "
        f"schedule and the daemon run (Overview, Automation), look at the last sweep runs, and "
        f"see the stuck events with `payments-pipeline status`",
        metadata,
    )


def check_result(backlog: status.Backlog, minutes: int) -> dg.AssetCheckResult:
    passed, description, metadata = _check(backlog, minutes)
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


@dg.asset(
    key=BACKLOG,
    group_name=HEALTH_GROUP,
    deps=[SUMMARY],
    check_specs=[CHECK_SPEC],
    kinds={"python"},
)
def webhook_backlog(
    context: dg.AssetExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    sweep: dg.ResourceParam[SweepSettings],
) -> dg.MaterializeResult:
    """What is not done yet, plotted over time: open events, how long stuck (minutes), dead,
    expired. Most entries are the sensor's (`webhook_events_sensor` reports one when a count
    changes or an age crosses a threshold, without a run); every sweep adds one as its last step,
    with the payments counts."""
    current = dataclasses.replace(settings, stuck_requeue_minutes=sweep.minutes)
    with payments_db.engine.connect() as conn:
        backlog = status.read_backlog(conn, current, payments=True)
    # `sweep` only in the sweep job's runs (its queue tag); a person's "Materialize" is not one.
    source = "sweep" if SWEEP_TAG in context.run.tags else "materialize"
    return dg.MaterializeResult(
        metadata=backlog_metadata(backlog, source=source),
        check_results=[check_result(backlog, sweep.minutes)],
    )


# Ages (minutes) past which the sensor reports the backlog again even if no count changed: the
# check's limit (twice the sweep's minutes) first, then an hour, 6 hours, a day, a week.
AGE_THRESHOLDS = (60, 6 * 60, 24 * 60, 7 * 24 * 60)


def _band(age_minutes: int, minutes: int) -> int:
    """How many thresholds `age_minutes` has crossed."""
    return sum(age_minutes > t for t in (2 * minutes, *AGE_THRESHOLDS))


def digest(backlog: status.Backlog, minutes: int) -> str:
    """What the sensor compares between ticks: the counts, and each age only as the band of
    thresholds it has crossed. An age grows every tick; a report each minute for that alone
    filled the asset's history with points that say nothing new."""
    numbers = {
        k: (_band(v, minutes) if k.endswith("_minutes") else v)
        for k, v in backlog.numbers().items()
    }
    return hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:16]


def refresh_events(
    backlog: status.Backlog, minutes: int
) -> list[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The sensor's report: a materialization of `webhook_backlog` and its check's evaluation."""
    passed, description, metadata = _check(backlog, minutes)
    return [
        dg.AssetMaterialization(
            asset_key=BACKLOG, metadata=backlog_metadata(backlog, source="sensor")
        ),
        dg.AssetCheckEvaluation(
            asset_key=BACKLOG,
            check_name=CHECK_NAME,
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata=metadata,
        ),
    ]

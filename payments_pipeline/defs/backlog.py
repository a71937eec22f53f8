"""The asset `webhook_backlog` (group `webhook_health`): what is not done yet, plotted over time.

Each materialization carries integers Dagster plots across materializations: open events per
provider and status (`stripe_received`, `monetbil_dead`, ...; `processed` is history, not
backlog, and counting it would scan the table), `open`, `dead`, `expired`, how long the
longest-stuck event inside the window has been stuck (`longest_stuck_seconds`) and the oldest
stuck event's age
since creation (`oldest_stuck_seconds`, as `payments-pipeline status` shows it), per provider
too, and, when a sweep refreshes it, the live and test-mode payments (`payments_live`,
`payments_test`).

Two writers: the sweep job materializes it as its last step (so every sweep refreshes it), and
`webhook_events_sensor` reports a materialization from its tick when the numbers changed since
its last report (`refresh_events`): a few index-served queries, no run launched. Its check,
`backlog_keeps_up` (warning), fails when an event has been stuck longer than twice the sweep's
`minutes`: a sweep every five minutes should never let that happen.
"""

import dataclasses
import hashlib
import json
from typing import Any

import dagster as dg

from .. import status
from ..config import Settings, load_settings
from .checks import SUMMARY
from .resources import PaymentsDatabase
from .sweep_config import SweepSettings
from .tables import dead_table

HEALTH_GROUP = "webhook_health"
BACKLOG = dg.AssetKey("webhook_backlog")
CHECK_NAME = "backlog_keeps_up"

CHECK_SPEC = dg.AssetCheckSpec(
    CHECK_NAME,
    asset=BACKLOG,
    description="Warning: an event has been stuck longer than twice the sweep's minutes.",
)


def _settings_for(minutes: int) -> Settings:
    return dataclasses.replace(load_settings(), stuck_requeue_minutes=minutes)


def backlog_metadata(backlog: status.Backlog, *, source: str) -> dict[str, Any]:
    return {
        **backlog.numbers(),
        "taken_at": dg.MetadataValue.text(f"{backlog.taken_at.isoformat()}Z"),
        "refreshed_by": dg.MetadataValue.text(source),
        **dead_table(backlog.dead_events),
    }


def _check(backlog: status.Backlog, minutes: int) -> tuple[bool, str, dict[str, int]]:
    limit = 2 * minutes * 60
    longest = backlog.longest_stuck_seconds()
    metadata = {"longest_stuck_seconds": longest, "limit_seconds": limit}
    if longest <= limit:
        return True, f"the longest-stuck event has waited {longest} s (limit {limit} s)", metadata
    worst = {p: backlog.longest_stuck_seconds(p) for p in backlog.counts}
    per = ", ".join(f"{p} {s} s" for p, s in worst.items() if s)
    return (
        False,
        f"an event has been stuck {longest} s, more than twice the sweep's minutes ({limit} s; "
        f"{per}): sweeps are not running or not keeping up. Check that the schedule and the "
        f"daemon run (Overview, Automation), look at the last sweep runs, and see the stuck "
        f"events with `payments-pipeline status`",
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
    payments_db: PaymentsDatabase, sweep: dg.ResourceParam[SweepSettings]
) -> dg.MaterializeResult:
    """The backlog as the sweep left it: open events, how long stuck, dead, expired, payments."""
    settings = _settings_for(sweep.minutes)
    with payments_db.engine.connect() as conn:
        backlog = status.read_backlog(conn, settings, payments=True)
    return dg.MaterializeResult(
        metadata=backlog_metadata(backlog, source="sweep"),
        check_results=[check_result(backlog, sweep.minutes)],
    )


def digest(backlog: status.Backlog) -> str:
    """What the sensor compares between ticks: the numbers, with ages to the minute (an age
    grows every tick; a report per tick for that alone would be noise)."""
    numbers = {k: (v // 60 if k.endswith("_seconds") else v) for k, v in backlog.numbers().items()}
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

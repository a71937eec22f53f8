"""The sensor `webhook_events_sensor`: an early sweep when events become stuck between ticks, and
the `webhook_backlog` asset kept fresh between sweeps.

Events become stuck by time passing (a claim whose processing never started, a worker that died),
not by a write, so the cursor is a time: `{"checked_until": "...Z", "backlog": ...}`, the `now`
of the last tick (UTC) and the digest of the backlog it last reported.
Each tick counts the events that became stuck in `(checked_until, now]` with one index-served
query (`status.newly_stuck`: its cost follows the rows found, not the table), then requests
one sweep scoped to the providers concerned, or says what it saw. The run key is built from the
window start and what was seen, so a re-evaluated tick never launches a second sweep.

Each tick also reads the backlog (`status.read_backlog` without the payments table: a few
index-served queries) and, when its numbers changed since the last report (a digest in the
cursor; ages count by the minute), reports a materialization of `webhook_backlog` with its
check's evaluation from the tick itself: no run is launched for it.
"""

import datetime as dt
import json

import dagster as dg

from .. import status
from ..config import Settings, load_settings
from ..models import PROVIDERS, utcnow
from .backlog import digest, refresh_events
from .jobs import automatic_status, requeue_stuck_webhooks
from .resources import PaymentsDatabase, sweep_run_config

SENSOR_NAME = "webhook_events_sensor"
SAW_TAG = "payments_pipeline/sensor_saw"


def read_cursor(cursor: str | None) -> dt.datetime | None:
    """The end of the last window (naive UTC); None on the first tick (or an unreadable cursor).
    Cursors written before the time carried its `Z` read the same."""
    try:
        moment = dt.datetime.fromisoformat(json.loads(cursor or "")["checked_until"])
    except (ValueError, KeyError, TypeError):
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def reported_backlog(cursor: str | None) -> str | None:
    """The digest of the backlog the last tick reported; None: none yet."""
    try:
        value = json.loads(cursor or "").get("backlog")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def build_sensor(settings: Settings) -> dg.SensorDefinition:
    """The sensor, its default status taken from `settings`."""

    @dg.sensor(
        name=SENSOR_NAME,
        job=requeue_stuck_webhooks,
        minimum_interval_seconds=30,
        default_status=automatic_status(settings, dg.DefaultSensorStatus),
        description="Requests one sweep for the providers whose events became stuck since the "
        "last tick; otherwise skips, saying what it saw.",
    )
    def webhook_events_sensor(
        context: dg.SensorEvaluationContext, payments_db: PaymentsDatabase
    ) -> dg.SensorResult:
        tick = load_settings()
        since, now = read_cursor(context.cursor), utcnow()
        with payments_db.engine.connect() as conn:
            seen = status.newly_stuck(conn, tick, since=since, now=now)
            backlog = status.read_backlog(conn, tick, now=now, payments=False)
        backlog_digest = digest(backlog, tick.stuck_requeue_minutes)
        events = []
        if backlog_digest != reported_backlog(context.cursor):
            events = refresh_events(backlog, tick.stuck_requeue_minutes)
        cursor = json.dumps({"checked_until": f"{now.isoformat()}Z", "backlog": backlog_digest})
        counts = {p: sum(s.count for s in seen if s.provider is p) for p in PROVIDERS}
        saw = ", ".join(f"{p.value} {n}" for p, n in counts.items())
        window = f"since {since.isoformat()}Z" if since else "(first look)"
        concerned = [p for p in PROVIDERS if counts[p]]
        if not concerned:
            return dg.SensorResult(
                skip_reason=f"no new stuck events {window}: {saw}",
                asset_events=events,
                cursor=cursor,
            )
        highest = {p: max(s.max_id for s in seen if s.provider is p) for p in concerned}
        context.log.info(f"new stuck events {window}: {saw}")
        request = dg.RunRequest(
            run_key=f"stuck {window}: "
            + ", ".join(f"{p.value} {counts[p]} up to #{highest[p]}" for p in concerned),
            run_config=sweep_run_config(
                minutes=tick.stuck_requeue_minutes,
                provider=concerned[0].value if len(concerned) == 1 else "all",
            ),
            tags={SAW_TAG: f"{window}: {saw}"},
        )
        return dg.SensorResult(run_requests=[request], asset_events=events, cursor=cursor)

    return webhook_events_sensor


webhook_events_sensor = build_sensor(load_settings())

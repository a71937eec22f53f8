"""The sensor `webhook_events_sensor`: an early sweep when events become stuck between ticks.

Events become stuck by time passing (a claim whose processing never started, a worker that died),
not by a write, so the cursor is a time: `{"checked_until": ...}`, the `now` of the last tick.
Each tick counts the events that became stuck in `(checked_until, now]` with one index-served
query (`status.newly_stuck`: its cost follows the rows found, not the table), then requests
one sweep scoped to the providers concerned, or says what it saw. The run key is built from the
window start and what was seen, so a re-evaluated tick never launches a second sweep.
"""

import datetime as dt
import json

import dagster as dg

from .. import status
from ..config import Settings, load_settings
from ..models import PROVIDERS, utcnow
from .jobs import automatic_status, requeue_stuck_webhooks
from .resources import PaymentsDatabase, sweep_run_config

SENSOR_NAME = "webhook_events_sensor"
SAW_TAG = "payments_pipeline/sensor_saw"


def read_cursor(cursor: str | None) -> dt.datetime | None:
    """The end of the last window; None on the first tick (or an unreadable cursor)."""
    try:
        return dt.datetime.fromisoformat(json.loads(cursor or "")["checked_until"])
    except (ValueError, KeyError, TypeError):
        return None


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
    ) -> dg.RunRequest | dg.SkipReason:
        tick = load_settings()
        since, now = read_cursor(context.cursor), utcnow()
        with payments_db.engine.connect() as conn:
            seen = status.newly_stuck(conn, tick, since=since, now=now)
        context.update_cursor(json.dumps({"checked_until": now.isoformat()}))
        counts = {p: sum(s.count for s in seen if s.provider is p) for p in PROVIDERS}
        saw = ", ".join(f"{p.value} {n}" for p, n in counts.items())
        window = f"since {since.isoformat()}Z" if since else "(first look)"
        concerned = [p for p in PROVIDERS if counts[p]]
        if not concerned:
            return dg.SkipReason(f"no new stuck events {window}: {saw}")
        highest = {p: max(s.max_id for s in seen if s.provider is p) for p in concerned}
        context.log.info(f"new stuck events {window}: {saw}")
        return dg.RunRequest(
            run_key=f"stuck {window}: "
            + ", ".join(f"{p.value} {counts[p]} up to #{highest[p]}" for p in concerned),
            run_config=sweep_run_config(
                minutes=tick.stuck_requeue_minutes,
                provider=concerned[0].value if len(concerned) == 1 else "all",
            ),
            tags={SAW_TAG: f"{window}: {saw}"},
        )

    return webhook_events_sensor


webhook_events_sensor = build_sensor(load_settings())

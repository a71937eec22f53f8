"""The schedule `requeue_stuck_webhooks_every_5_minutes` (the seed's `everyFiveMinutes()`).

Evaluated at tick time, so `PAYMENTS_STUCK_REQUEUE_MINUTES` is read when the tick fires, not when
the code location loaded. It skips, saying which run holds the turn, while a sweep run is queued
or in progress on the instance (the seed's withoutOverlapping + onOneServer: one instance, one
queue, whichever daemon host evaluates the tick). `PAYMENTS_STUCK_REQUEUE_ENABLED` decides only
the default status; a person's start/stop in the UI wins over it.
"""

import dagster as dg

from ..config import Settings, load_settings
from .jobs import active_sweep_runs, automatic_status, describe_run, requeue_stuck_webhooks
from .resources import sweep_run_config

SCHEDULE_NAME = "requeue_stuck_webhooks_every_5_minutes"
CRON = "*/5 * * * *"


def build_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """The schedule, its default status taken from `settings` (tests build both variants)."""

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=requeue_stuck_webhooks,
        cron_schedule=CRON,
        execution_timezone="UTC",
        default_status=automatic_status(settings, dg.DefaultScheduleStatus),
        description="One sweep of every provider every five minutes, never two at once.",
    )
    def requeue_every_5_minutes(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        active = active_sweep_runs(context.instance)
        if active:
            return dg.SkipReason(
                f"a sweep is still queued or in progress ({describe_run(active[0])}): "
                "skipping this tick, the next one will sweep"
            )
        minutes = load_settings().stuck_requeue_minutes
        return dg.RunRequest(run_config=sweep_run_config(minutes=minutes, provider="all"))

    return requeue_every_5_minutes


requeue_schedule = build_schedule(load_settings())

"""`payments_pipeline.definitions:defs`, the code location `workspace.yaml` loads.

It only assembles `payments_pipeline/defs/`. The location-wide executor is in-process too, so a
"Materialize" click on the asset graph (Dagster's implicit asset job) runs the phases the way the
job does, handing values over in memory.
"""

from __future__ import annotations

import dagster as dg

from .config import load_settings
from .defs import (
    assets,
    backlog,
    dismiss,
    drift,
    jobs,
    reconcile,
    replay,
    resources,
    run_failures,
    schedules,
    sensors,
)

defs = dg.Definitions(
    assets=[
        assets.stuck_webhook_events,
        assets.claimed_webhook_events,
        assets.dispatched_webhook_events,
        assets.requeue_sweep_summary,
        backlog.webhook_backlog,
        reconcile.recovered_webhook_events,
        drift.stripe_payment_drift,
    ],
    jobs=[
        jobs.requeue_stuck_webhooks,
        replay.replay_webhook_events,
        dismiss.dismiss_webhook_events,
        reconcile.reconcile_stripe_events,
        reconcile.reconcile_monetbil_payments,
    ],
    schedules=[schedules.requeue_schedule, reconcile.reconcile_schedule],
    sensors=[sensors.webhook_events_sensor, run_failures.sweep_run_failure_sensor],
    resources=resources.build_resources(load_settings()),
    executor=dg.in_process_executor,
)

"""`sweep_run_failure_sensor`: a sweep (or reconciliation) run that failed outside its own steps
closes its audit row.

A step that raises marks its `sweep_runs` row failed itself (`assets._failing_marks_sweep`). A run
whose process was killed between steps, or that run monitoring gave up on, never gets that
chance: without this sensor its row would stay `running` forever. Dagster reports the run's
failure here, and the row that carries its run id is closed `failed` with the reason.
"""

import dagster as dg

from .. import store
from ..models import utcnow
from . import reconcile
from .jobs import requeue_stuck_webhooks
from .resources import PaymentsDatabase


@dg.run_failure_sensor(
    name="sweep_run_failure_sensor",
    monitored_jobs=[
        requeue_stuck_webhooks,
        reconcile.reconcile_stripe_events,
        reconcile.reconcile_monetbil_payments,
    ],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks the sweep_runs row of a failed sweep run failed, whatever killed the run.",
)
def sweep_run_failure_sensor(
    context: dg.RunFailureSensorContext, payments_db: PaymentsDatabase
) -> None:
    run_id = context.dagster_run.run_id
    reason = (context.failure_event.message or "the Dagster run failed").strip().splitlines()[0]
    with payments_db.engine.begin() as conn:
        closed = store.fail_running_sweep_of_dagster_run(
            conn, dagster_run_id=run_id, finished_at=utcnow(), error=f"run failed: {reason}"
        )
    if closed:
        context.log.warning(f"sweep_runs row of failed run {run_id} closed as failed")

"""`sweep_run_failure_sensor`: a failed sweep run never leaves its audit row `running`."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.defs.resources import PaymentsDatabase
from payments_pipeline.defs.run_failures import sweep_run_failure_sensor

from .conftest import BreakStep, execute_sweep, sweep_rows, url_of


def _evaluate(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, engine: Engine
) -> None:
    # `payments_db` yields its engine: the context must be opened as a context manager.
    with dg.build_run_status_sensor_context(
        sensor_name="sweep_run_failure_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"payments_db": PaymentsDatabase(url=url_of(engine))},
    ) as context:
        sweep_run_failure_sensor(context.for_run_failure())


def test_a_run_that_died_between_steps_gets_its_row_closed(
    db_env: Engine, break_sweep_step: BreakStep, instance: dg.DagsterInstance
) -> None:
    break_sweep_step("dispatch_claimed", "worker host lost")
    result = execute_sweep(instance)
    assert not result.success
    # The failing step closed its row itself; a process killed between steps never gets to.
    # Put the row back the way such a run leaves it.
    with db_env.begin() as conn:
        conn.execute(
            sa.update(store.sweep_runs).values(status="running", finished_at=None, error=None)
        )
    _evaluate(instance, result, db_env)
    (row,) = sweep_rows(db_env)
    assert row.dagster_run_id == result.run_id
    assert row.status == "failed" and row.finished_at is not None
    assert row.error.startswith("run failed: ")
    # Closing is conditional on `running`: a second report changes nothing.
    with db_env.begin() as conn:
        assert not store.fail_running_sweep_of_dagster_run(
            conn, dagster_run_id=result.run_id, finished_at=row.finished_at, error="again"
        )


def test_the_sensor_is_part_of_the_code_location() -> None:
    from payments_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def("sweep_run_failure_sensor")
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING

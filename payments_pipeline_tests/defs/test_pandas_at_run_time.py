"""pandas is imported where two tables are joined (the drift comparison), at run time only: never
when the code location loads, in the sweep's steps or in the sensor's tick, which stay fast
(a launched run is a fresh process; `import pandas` alone costs most of a second there)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from sqlalchemy import Engine

from .conftest import url_of

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import dagster as dg
    from payments_pipeline.definitions import defs
    from payments_pipeline.defs.resources import PaymentsDatabase, sweep_run_config
    seen = {"load": "pandas" in sys.modules}
    instance = dg.DagsterInstance.ephemeral()
    run = defs.resolve_job_def("requeue_stuck_webhooks").execute_in_process(
        run_config=sweep_run_config(minutes=10, provider="all"), instance=instance
    )
    assert run.success
    seen["sweep"] = "pandas" in sys.modules
    sensor = defs.resolve_sensor_def("webhook_events_sensor")
    resources = {"payments_db": PaymentsDatabase(url=sys.argv[1])}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        sensor.evaluate_tick(context)
    seen["tick"] = "pandas" in sys.modules
    from payments_pipeline.drift import Expected, compare
    compare([Expected("pi_1", "succeeded", 100, 0, "eur", False)], [])
    seen["drift"] = "pandas" in sys.modules
    print(json.dumps(seen))
    """
)


def test_the_code_location_the_sweep_and_the_tick_never_import_pandas(
    sqlite_engine: Engine,
) -> None:
    url = url_of(sqlite_engine)
    env_script = f"import os; os.environ['PAYMENTS_DATABASE_URL'] = {url!r}\n" + SCRIPT
    done = subprocess.run(
        [sys.executable, "-c", env_script, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # The comparison does import it: the probe would see an import anywhere before it.
    assert seen == {"load": False, "sweep": False, "tick": False, "drift": True}

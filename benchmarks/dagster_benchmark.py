"""Benchmark of the Dagster door: what the job costs over the bare core call, and one sensor tick
on 1,000,000 rows in PostgreSQL. Targets (issue 4): job overhead <= 1 s; sensor tick < 20 ms.

(a) An empty sweep, side by side in one process, interleaved, on the same empty SQLite payments
    database, medians of `--runs` after one warm-up each (imports, pandas, SQLite storage):
    - core: `run_sweep(engine, params, InlineDispatcher)`, what the CLI did before Dagster;
    - job:  `requeue_stuck_webhooks.execute_in_process` on a SQLite-backed temporary DAGSTER_HOME
            (the shipped dagster.yaml): run record, event log, four materializations, three checks;
    - cli:  `defs.launch.run_sweep_job`, what `payments-pipeline requeue-stuck-webhooks` does with
            DAGSTER_HOME set (opens the instance, refuses if a sweep is active, runs the job);
    - job_pg, cli_pg: the same two on an instance configured by dagster_home/dagster.postgres.yaml
            (runs and event logs in a scratch PostgreSQL database), the production setup. A run
            the daemon launches stores its events like job_pg (a connection per statement); the
            CLI holds pooled connections for its run.
(b) The sensor on `--rows` events in PostgreSQL: a database of its own (`pp_bench_dagster_<hex>`),
    loaded server-side with `INSERT ... SELECT generate_series` (processed rows over six days, 1,000
    failed rows waiting out a backoff, and a few stuck rows of every reason, some of which became
    stuck within the last 30 s), analysed, then:
    - the tick as the daemon evaluates it (`build_sensor_context` with the `payments_db` resource,
      then `evaluate_tick`) with a steady-state cursor 30 s old, median of `--runs`: warm (the
      engine the code server keeps between ticks) and cold (the first tick of a process);
    - the first look (no cursor: every stuck row);
    - the query alone on a warm connection, and its EXPLAIN (ANALYZE, BUFFERS).
    The database is dropped at the end, also on error or Ctrl-C.

    .venv/bin/python benchmarks/dagster_benchmark.py                       # both, 1M rows
    .venv/bin/python benchmarks/dagster_benchmark.py --rows 100000 --runs 10
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import harness
import sqlalchemy as sa

from payments_pipeline import migrations, store
from payments_pipeline.config import load_settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs.launch import (
    SHIPPED_INSTANCE_CONFIG,
    prepare_demo_home,
    run_sweep_job,
)
from payments_pipeline.defs.resources import PaymentsDatabase, _tick_engine, sweep_run_config
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.models import utcnow
from payments_pipeline.sweep import SweepParams, run_sweep


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- (a) job vs core ------------------------------------------------------------------------------


def bench_job(runs: int, postgres_url: str | None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pp_bench_job_")))
        url = f"sqlite:///{folder / 'payments.sqlite3'}"
        engine = store.make_engine(url)
        stack.callback(engine.dispose)
        migrations.upgrade(engine)
        os.environ["PAYMENTS_DATABASE_URL"] = url  # what payments_db's EnvVar reads
        home = prepare_demo_home(folder)
        settings = load_settings()
        params = SweepParams.from_settings(settings)
        job = defs.resolve_job_def("requeue_stuck_webhooks")
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        config = sweep_run_config(minutes=params.minutes, provider="all") | quiet

        def core() -> None:
            run_sweep(engine, params, InlineDispatcher(engine, settings))

        def through(instance: dg.DagsterInstance) -> Callable[[], object]:
            return lambda: job.execute_in_process(run_config=config, instance=instance)

        def through_cli() -> None:
            run_sweep_job(home, database_url=url, params=params, log_level="WARNING")

        doors: dict[str, Callable[[], Any]] = {
            "core": core,
            "job": through(stack.enter_context(dg.DagsterInstance.from_config(str(home)))),
            "cli": through_cli,
        }
        if postgres_url:  # the production instance config, on a scratch database
            dagster_db = stack.enter_context(
                harness.own_database(postgres_url, "pp_bench_dagster", migrate=False)
            )
            os.environ["DAGSTER_POSTGRES_URL"] = (
                sa.make_url(dagster_db)
                .set(drivername="postgresql+psycopg2")
                .render_as_string(hide_password=False)
            )
            pg_home = folder / "pg_home"
            pg_home.mkdir()
            shutil.copyfile(
                SHIPPED_INSTANCE_CONFIG.with_name("dagster.postgres.yaml"), pg_home / "dagster.yaml"
            )
            doors["job_pg"] = through(
                stack.enter_context(dg.DagsterInstance.from_config(str(pg_home)))
            )
            doors["cli_pg"] = lambda: run_sweep_job(
                pg_home, database_url=url, params=params, log_level="WARNING"
            )
        samples: dict[str, list[float]] = {name: [] for name in doors}
        for fn in doors.values():  # warm-up: imports, pandas, storage tables
            fn()
        for _ in range(runs):
            for name, fn in doors.items():
                samples[name].append(timed(fn))
    medians = {name: harness.median_ms(values) for name, values in samples.items()}
    report: dict[str, Any] = {"runs": runs}
    for name, value in medians.items():
        report[f"{name}_median_ms"] = value
        if name != "core":
            report[f"{name}_overhead_ms"] = round(value - medians["core"], 2)
            report[f"{name}_p90_ms"] = round(sorted(samples[name])[int(0.9 * (runs - 1))] * 1000, 2)
    report["job_over_core_ratio"] = round(medians["job"] / medians["core"], 1)
    return report


# --- (b) the sensor on a large table ------------------------------------------------------------

LOAD_PROCESSED = """
INSERT INTO webhook_events (provider, provider_event_id, event_type, status, payload, attempts,
    attempts_base, dispatched_at, processing_started_at, processed_at, created_at, updated_at)
SELECT CASE WHEN g % 2 = 0 THEN 'stripe' ELSE 'monetbil' END, 'bench_' || g,
    'payment_intent.succeeded', 'processed', '{}', 1, 0,
    t + interval '1 second', t + interval '2 seconds', t + interval '3 seconds', t, t
FROM (SELECT g, CAST(:now AS timestamp) - g * CAST(:step AS interval) AS t
      FROM generate_series(1, :n) AS g) AS s
"""
LOAD_FAILED = """
INSERT INTO webhook_events (provider, provider_event_id, event_type, status, payload, attempts,
    attempts_base, dispatched_at, next_attempt_at, last_error, created_at, updated_at)
SELECT 'stripe', 'bench_failed_' || g, 'payment_intent.succeeded', 'failed', '{}', 3, 0,
    CAST(:now AS timestamp) - interval '1 hour', CAST(:now AS timestamp) + interval '2 hours',
    'TimeoutError', CAST(:now AS timestamp) - interval '1 hour',
    CAST(:now AS timestamp) - interval '1 hour'
FROM generate_series(1, 1000) AS g
"""


def stuck_rows(now: dt.datetime, per_reason: int) -> list[dict[str, Any]]:
    """Stuck rows of every reason: one in four became stuck in the last 30 s, the others earlier."""
    rows: list[dict[str, Any]] = []
    for i in range(per_reason):
        late = dt.timedelta(seconds=10) if i % 4 == 0 else dt.timedelta(minutes=5 + i)
        provider = ("stripe", "monetbil")[(i // 4) % 2]
        common = {"provider": provider, "event_type": "payment_intent.succeeded", "payload": "{}"}
        rows += [
            common
            | {
                "provider_event_id": f"null_{i}",
                "created_at": now - dt.timedelta(minutes=1) - late,
            },
            common
            | {
                "provider_event_id": f"lost_{i}",
                "dispatched_at": now - dt.timedelta(minutes=10) - late,
                "created_at": now - dt.timedelta(hours=1),
            },
            common
            | {
                "provider_event_id": f"failed_{i}",
                "status": "failed",
                "attempts": 1,
                "dispatched_at": now - dt.timedelta(hours=1),
                "next_attempt_at": now - late,
                "created_at": now - dt.timedelta(hours=1),
            },
            common
            | {
                "provider_event_id": f"stalled_{i}",
                "status": "processing",
                "attempts": 1,
                "dispatched_at": now - dt.timedelta(hours=1),
                "processing_started_at": now - dt.timedelta(minutes=30) - late,
                "created_at": now - dt.timedelta(hours=1),
            },
        ]
    return [r | {"updated_at": now} for r in rows]


def bench_sensor(admin_url: str, rows: int, runs: int) -> dict[str, Any]:
    sensor = defs.resolve_sensor_def("webhook_events_sensor")
    with harness.own_database(admin_url, "pp_bench_dagster") as url:
        engine = store.make_engine(url)
        now = utcnow()
        step = dt.timedelta(days=6) / rows
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text(LOAD_PROCESSED), {"now": now, "step": step, "n": rows})
            conn.execute(sa.text(LOAD_FAILED), {"now": now})
            store.insert_events(conn, rows=stuck_rows(now, per_reason=12))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE webhook_events")
            total = conn.execute(sa.select(sa.func.count()).select_from(store.webhook_events))
            table_rows = int(total.scalar_one())
        load_s = round(time.perf_counter() - started, 1)

        def steady() -> str:
            since = utcnow() - dt.timedelta(seconds=30)
            return json.dumps({"checked_until": since.isoformat()})

        with dg.DagsterInstance.ephemeral() as instance:  # the daemon's is long-lived too

            def tick(cursor: str | None) -> Any:
                resources = {"payments_db": PaymentsDatabase(url=url)}
                with dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources=resources
                ) as context:
                    return sensor.evaluate_tick(context)

            first = tick(None)
            steady_result = tick(steady())
            tick_samples = [timed(lambda: tick(steady())) for _ in range(runs)]
            first_samples = [timed(lambda: tick(None)) for _ in range(runs)]

            def cold_tick() -> float:
                """The first tick in a fresh code server: it makes the shared engine."""
                _tick_engine.cache_clear()
                elapsed = timed(lambda: tick(steady()))
                _tick_engine(url).dispose()
                return elapsed

            cold_samples = [cold_tick() for _ in range(runs)]

        captured: list[tuple[str, Any]] = []

        def capture(*args: Any) -> None:
            captured.append((args[2], args[3]))

        with engine.connect() as conn:

            def query(at: dt.datetime) -> Any:
                """The sensor's query alone, for a steady-state tick at `at`."""
                return store.count_newly_stuck(
                    conn,
                    now=at,
                    since=at - dt.timedelta(seconds=30),
                    created_after=at - dt.timedelta(days=7),
                    minutes=10,
                    timeout_minutes=30,
                )

            query_samples = [timed(functools.partial(query, utcnow())) for _ in range(runs)]
            sa.event.listen(engine, "before_cursor_execute", capture)
            query(utcnow())
            sa.event.remove(engine, "before_cursor_execute", capture)
            statement, params = captured[-1]
            plan = [
                r[0]
                for r in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params)
            ]
        engine.dispose()
    request = steady_result.run_requests[0] if steady_result.run_requests else None
    return {
        "table_rows": table_rows,
        "load_seconds": load_s,
        "tick_median_ms": harness.median_ms(tick_samples),
        "tick_max_ms": round(max(tick_samples) * 1000, 2),
        "first_look_tick_median_ms": harness.median_ms(first_samples),
        "cold_tick_median_ms": harness.median_ms(cold_samples),
        "query_median_ms": harness.median_ms(query_samples),
        "first_look": first.run_requests[0].run_key if first.run_requests else first.skip_message,
        "steady_tick": request.run_key if request else steady_result.skip_message,
        "explain": plan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PAYMENTS_BENCH_POSTGRES_URL", harness.DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--skip-sensor", action="store_true")
    args = parser.parse_args(argv)
    harness.interrupt_on_signals()
    logging.basicConfig(level=logging.ERROR)
    report: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    if not args.skip_job:
        report["job_vs_core"] = bench_job(args.runs, args.postgres_url)
        print(json.dumps(report["job_vs_core"], indent=2), flush=True)
    if not args.skip_sensor:
        report["sensor"] = bench_sensor(args.postgres_url, args.rows, args.runs)
        print(json.dumps(report["sensor"], indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One soak run, start to end: setup, load under chaos, settle, verify, report, clean up.

Every resource is registered on an `ExitStack` as soon as it exists, so whatever ends the run (the
end of the duration, a failure, Ctrl-C) stops every child process and drops the database.
Timeline (t = seconds since the load started):

    0 .. duration - chaos_stop_early   load + chaos + failing handlers + the sweep cycle
    .. duration                        load only, handlers no longer fail
    then                               load drained; sweep cycle stopped; workers restarted with
                                       failure rate 0; sweeps until every row is processed or dead
                                       (settle); one final sweep; everything stopped; verify.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from payments_pipeline import store
from payments_pipeline.models import utcnow

from . import celery_runs, logscan, report, snapshot
from .broker import SoakQueue
from .celery_supervisor import CeleryWorkerSupervisor
from .chaos import Chaos
from .config import SoakConfig
from .database import SoakDatabase
from .load import LoadGenerator
from .processes import SERVE, Child, soak_env, wait_healthy
from .stories import StoryFactory
from .supervisor import WorkerSupervisor
from .sweeps import Sweeper
from .tcp_proxy import TcpProxy
from .verify import verify
from .worker import INJECTED

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# How long the load waits for the Celery workers to be up before it starts anyway.
WORKERS_UP_TIMEOUT = 120.0


class SoakAborted(RuntimeError):
    """The run could not go on (the receiver died): the cleanup still ran."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_soak(config: SoakConfig, progress: Progress = _stderr) -> dict[str, Any]:
    """Run the soak; returns the report (its `violation_count` says whether it passed)."""
    log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    result = _run(config, log_dir, progress)
    if config.log_dir is None and result["violation_count"] == 0:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        result["log_dir"] = str(log_dir)
    return result


def _run(config: SoakConfig, log_dir: Path, progress: Progress) -> dict[str, Any]:
    started = time.monotonic()
    stripe_secret = f"whsec_soak_{secrets.token_hex(16)}"
    monetbil_secret = f"mbsec_soak_{secrets.token_hex(16)}"
    celery = config.dispatch == "celery"
    db = SoakDatabase(config.server_url)
    with ExitStack() as stack:
        stack.callback(db.drop)
        db.create()
        assert db.engine is not None
        progress(f"soak: database {db.name} on {config.backend}, logs in {log_dir}")
        settings = {
            "PAYMENTS_DATABASE_URL": db.url,
            "STRIPE_WEBHOOK_SECRET": stripe_secret,
            "MONETBIL_SERVICE_SECRET": monetbil_secret,
            "PAYMENTS_STUCK_REQUEUE_MINUTES": "1",
            "PAYMENTS_PROCESSING_TIMEOUT_MINUTES": "1",
            "PAYMENTS_MAX_BACKOFF_MINUTES": "1",
            "PAYMENTS_MAX_ATTEMPTS": str(config.max_attempts),
        }
        queue: SoakQueue | None = None
        proxy: TcpProxy | None = None
        if celery:
            queue = SoakQueue(config.broker_url)
            queue.check()
            # Registered before any process starts, so it runs after every one has stopped.
            stack.callback(queue.delete)
            progress(f"soak: celery engine, queue {queue.name} on {queue.where}")
            # The sweeps (and anything else reading PAYMENTS_DISPATCH) publish to the queue;
            # every process reaches the broker through the soak's proxy, whose faults the chaos
            # controls (the queue itself is looked at and deleted directly).
            broker_url = config.broker_url
            if config.broker_faults:
                proxy = TcpProxy.for_url(config.broker_url)
                stack.callback(proxy.close)
                broker_url = proxy.url_for(config.broker_url)
                progress(f"soak: broker faults through a TCP proxy on port {proxy.port}")
            settings |= {
                "PAYMENTS_DISPATCH": "celery",
                "PAYMENTS_CELERY_BROKER_URL": broker_url,
                "PAYMENTS_CELERY_QUEUE": queue.name,
            }
        env = soak_env(os.environ, settings)
        port = free_port()
        serve_argv = [*SERVE, "serve", "--dispatch", config.dispatch, "--port", str(port)]
        celery_workers: CeleryWorkerSupervisor | None = None
        if queue is not None:
            # Celery workers take a while to start (seconds, tens on a loaded machine): they
            # start with the receiver, and the load waits for them (below).
            celery_workers = CeleryWorkerSupervisor(
                config.workers,
                env,
                log_dir,
                seed=config.seed * 1000,
                queue=queue.name,
                concurrency=config.celery_concurrency,
            )
            stack.callback(celery_workers.stop_all)
            celery_workers.start(config.failure_rate, config.handler_delay_ms)
        serve = Child("serve", [*serve_argv, "--workers", str(config.serve_workers)], env, log_dir)
        stack.callback(serve.stop)
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, serve)

        workers: WorkerSupervisor
        if celery_workers is not None:
            workers = celery_workers
            up = celery_workers.wait_up(WORKERS_UP_TIMEOUT)
            progress(f"soak: {up} of {config.workers} Celery workers up")
        else:
            workers = WorkerSupervisor(config.workers, env, log_dir, seed=config.seed * 1000)
            stack.callback(workers.stop_all)
            workers.start(config.failure_rate, config.handler_delay_ms)
        sweeper = Sweeper(env, log_dir, seed=config.seed + 1)
        stack.callback(sweeper.stop_cycle)
        stack.callback(sweeper.kill_running)
        factory = StoryFactory(
            random.Random(config.seed + 2),
            stripe_secret=stripe_secret,
            monetbil_secret=monetbil_secret,
            out_of_order_chance=config.out_of_order_chance,
        )
        load = LoadGenerator(config, base_url, factory)
        stack.callback(load.close)
        chaos = Chaos(
            db,
            workers,
            kill_every=config.kill_every,
            cut_every=config.cut_every,
            cut_fraction=config.cut_fraction,
            freeze_every=config.freeze_every,
            freeze_for=config.freeze_for,
            max_freezes=config.max_freezes,
            seed=config.seed + 3,
            broker=proxy,
            broker_cut_every=config.broker_cut_every,
            broker_down_every=config.broker_down_every,
            broker_down_for=config.broker_down_for,
        )
        stack.callback(chaos.stop)

        t0 = time.monotonic()
        load.start()
        chaos.start()
        sweeper.start_cycle(config.sweep_every, config.concurrent_sweep_chance)

        def status() -> str:
            kills = f"kills {chaos.stats.kills}"
            if isinstance(workers, CeleryWorkerSupervisor):
                k = workers.kills
                kills += f" (pool processes {k.pool_kills}, workers {k.worker_kills})"
            return (
                f"[{time.monotonic() - t0:5.0f}s] events {len(load.records)}, deliveries "
                f"{load.counts['deliveries']}, {kills}, cut connections "
                f"{chaos.stats.cut_connections}, sweeps {len(sweeper.results)}"
            )

        _wait_until(t0 + config.chaos_seconds, serve, progress, status)
        missing = _missing_faults(config, chaos, workers)
        if missing and config.chaos_grace:
            progress(f"{status()}: no {', '.join(missing)} yet; chaos goes on (grace)")
            grace_end = time.monotonic() + config.chaos_grace
            while missing and time.monotonic() < grace_end:
                _wait_until(min(time.monotonic() + 0.5, grace_end), serve, progress, status)
                missing = _missing_faults(config, chaos, workers)
        extended = max(0.0, time.monotonic() - (t0 + config.chaos_seconds))
        chaos.stop()
        if config.chaos_stop_early:
            progress(f"{status()}: chaos over, handlers stop failing")
            workers.restart_all(0.0)
        _wait_until(t0 + config.duration + extended, serve, progress, status)
        progress(f"{status()}: load over, draining deliveries")
        load.stop_new()
        load.drain(config.drain_timeout)
        sweeper.stop_cycle()
        if workers.failure_rate:
            workers.restart_all(0.0)
        settle_started = time.monotonic()
        pending = _settle(db.engine, sweeper, config, progress, status)
        settle_seconds = time.monotonic() - settle_started
        final = sweeper.run_group(1, "final")
        if celery and any((r.summary or {}).get("total", {}).get("dispatched") for r in final):
            # The final sweep only published what it claimed: let the workers take it.
            pending = _await_settled(db.engine, config.drain_timeout)
        progress(f"{status()}: settled ({pending} pending), stopping and verifying")
        workers.stop_all()
        serve.stop()
        messages_left = queue.depth() if queue is not None else None

        snap = snapshot.take(db.engine)
        worker_logs = workers.log_files()
        runs = celery_runs.read(worker_logs) if celery else None
        verdict = verify(snap, load.records, load.stories, sweeper.results, runs)
        if pending:
            verdict.add("settled", [f"{pending} events not processed or dead after settle"])
        verdict.add("deliveries", load.violations)
        verdict.add("processes", workers.stats.unexpected_exits)
        slow_starts = 0
        if isinstance(workers, CeleryWorkerSupervisor):
            pool_problems, slow_starts = workers.pool_exits()
            verdict.add("processes", pool_problems)
        # An unmasked broker URL (`user:password@`) in a log line is a leaked secret too.
        broker_secret = f":{queue.password}@" if queue is not None and queue.password else ""
        logs = logscan.scan(
            [serve.stdout_path, serve.stderr_path, *worker_logs, *sweeper.log_files()],
            secrets=[stripe_secret, monetbil_secret, broker_secret],
            marker=factory.marker,
            signatures=load.signatures,
        )
        verdict.add("log_leaks", logs.leaks)
        head: dict[str, Any] = {
            "backend": config.backend,
            "dispatch": config.dispatch,
            "database": db.name,
            "seed": config.seed,
            "duration_s": config.duration,
            "elapsed_s": round(time.monotonic() - started, 1),
            "settle_s": round(settle_seconds, 1),
            "config": {
                "rate": config.rate,
                "workers": config.workers,
                "serve_workers": config.serve_workers,
                "failure_rate": config.failure_rate,
                "max_attempts": config.max_attempts,
                "chaos_stop_early": config.chaos_stop_early,
                "chaos_extended_s": round(extended, 1),
            },
        }
        stale = workers.outcome_total("stale")
        if isinstance(workers, CeleryWorkerSupervisor) and runs is not None:
            stale = runs.outcome_totals()["stale"]
            head["config"]["celery_concurrency"] = config.celery_concurrency
            head["celery"] = report.celery_figures(
                queue=workers.queue,
                kills=workers.kills,
                pool_exits_logged=workers.pool_exits_seen(),
                pool_starts_abandoned=slow_starts,
                runs=runs,
                messages_left=messages_left,
            )
        return report.build(
            head=head,
            load=load,
            chaos=chaos.stats,
            workers=workers.stats,
            injected_failures=_count_lines(worker_logs, INJECTED),
            stale_attempts=stale,
            sweeps=sweeper.results,
            sweep_groups=sweeper.groups,
            snap=snap,
            verdict=verdict,
            logs=logs,
        )
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def _wait_until(
    deadline: float, serve: Child, progress: Progress, status: Callable[[], str]
) -> None:
    """Sleep until `deadline`, checking the receiver is alive and reporting every 30 s."""
    next_report = time.monotonic() + 30
    while (now := time.monotonic()) < deadline:
        if not serve.alive():
            raise SoakAborted(f"the receiver exited with {serve.popen.returncode}")
        if now >= next_report:
            progress(status())
            next_report = now + 30
        time.sleep(min(0.5, deadline - now))


def _unsettled(engine: sa.Engine) -> tuple[int, float]:
    """Rows not processed or dead yet, and the seconds until the first of them becomes a sweep
    candidate (0: one is due now). Rows waiting in the worker queue become candidates only if no
    worker takes them within `minutes` (`dispatch_lost`)."""
    e = store.webhook_events.c
    minute = dt.timedelta(minutes=1)  # PAYMENTS_STUCK_REQUEUE_MINUTES and the processing timeout
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.status, e.dispatched_at, e.processing_started_at, e.next_attempt_at).where(
                e.status.not_in(("processed", "dead"))
            )
        ).all()
    now = utcnow()

    def due(status: str, dispatched: Any, started: Any, next_attempt: Any) -> dt.datetime:
        if status == "failed":  # failed_old: dispatched long enough ago and backoff over
            return max((dispatched or now) + minute, next_attempt or now)
        if status == "processing":  # processing_stalled
            return (started or now) + minute
        return dispatched + minute if dispatched else now  # dispatch_lost / dispatched_at_null

    wait = min(((due(*row) - now).total_seconds() for row in rows), default=0.0)
    return len(rows), max(0.0, wait)


def _settle(
    engine: sa.Engine,
    sweeper: Sweeper,
    config: SoakConfig,
    progress: Progress,
    status: Callable[[], str],
) -> int:
    """Until every row is processed or dead: sweeps whenever a row is due (a CLI sweep costs
    seconds of CPU, so none is launched for nothing), and at least every 20 s. This is where the
    stalled and failed rows of the chaos become candidates, so groups of 2-3 sweeps at once (at
    `concurrent_sweep_chance`) race for the same rows here. Returns what is left."""
    timeout = config.settle_timeout
    deadline = time.monotonic() + timeout
    next_report = 0.0
    last_sweep = time.monotonic()
    while True:
        pending, wait = _unsettled(engine)
        if not pending or time.monotonic() >= deadline:
            return pending
        if time.monotonic() >= next_report:
            progress(f"{status()}: settling, {pending} events not processed or dead yet")
            next_report = time.monotonic() + 30
        if wait <= 0 or time.monotonic() - last_sweep >= 20:
            sweeper.run_group(sweeper.group_size(config.concurrent_sweep_chance), "settle")
            last_sweep = time.monotonic()
        else:
            time.sleep(min(wait + 0.5, 5.0, max(0.1, deadline - time.monotonic())))


def _await_settled(engine: sa.Engine, timeout: float) -> int:
    """Wait up to `timeout` s for every row to be processed or dead; what is left."""
    deadline = time.monotonic() + timeout
    while (pending := _unsettled(engine)[0]) and time.monotonic() < deadline:
        time.sleep(0.5)
    return pending


def _missing_faults(config: SoakConfig, chaos: Chaos, workers: WorkerSupervisor) -> list[str]:
    """The kinds of fault that have not happened yet (see `SoakConfig.chaos_grace`)."""
    missing = []
    if isinstance(workers, CeleryWorkerSupervisor):
        if workers.kills.pool_kills == 0:
            missing.append("pool process kill")
        if workers.kills.worker_kills == 0:
            missing.append("worker kill")
        if workers.stats.kills_mid_handler == 0:  # its message must come back: a redelivery
            missing.append("kill mid-handler")
    elif chaos.stats.kills == 0:
        missing.append("kill")
    if chaos.stats.cut_connections == 0:
        missing.append("cut")
    if chaos.broker_cut_every is not None and chaos.stats.broker_cut_connections == 0:
        missing.append("broker cut")
    if chaos.broker_down_every is not None and chaos.stats.broker_outages == 0:
        missing.append("broker outage")
    if config.freezes_enabled and config.max_freezes and chaos.stats.freezes < config.max_freezes:
        missing.append("freeze")
    if config.failure_rate and _count_lines(workers.live_log_files(), INJECTED) == 0:
        missing.append("injected failure")
    return missing


def _count_lines(paths: list[Path], needle: str) -> int:
    total = 0
    for path in paths:
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as lines:
                total += sum(needle in line for line in lines)
    return total

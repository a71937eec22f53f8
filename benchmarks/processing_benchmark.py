"""Benchmark of event processing: how fast the engines drain claimed events, against a commit floor.

What runs (all on 127.0.0.1, nothing leaves the machine), in one run:

1. the commit floor: `pgbench -N -c 4 -T <--floor-seconds>` on a pgbench database of its own
   (`pgbench -i -s 1`), in transactions/s: what this PostgreSQL commits with 4 clients;
2. drain throughput, for each engine (`--engines`) and each worker count (`--workers`): a fresh
   database `pp_bench_processing_<random>_<n>` with `--events` claimed Stripe
   `payment_intent.succeeded` events (`received`, `dispatched_at` set, `processing_started_at`
   NULL; one `pi_` payment each), then the workers are started and the clock runs from their
   start until every event is `processed` (polled every `--poll-interval`), events/s = N / that.
   Engines, always driven through their command line and environment, never imported:
   - `baseline`: `payments-pipeline worker` of `--baseline REV`, from a temporary git worktree
     (`./dev setup` there; removed at the end), on a database migrated by that tree's own
     `payments-pipeline db upgrade`;
   - `table`: this tree's `payments-pipeline worker` with `PAYMENTS_DISPATCH=table`, N processes;
   - `celery`: this tree's `PAYMENTS_DISPATCH=celery payments-pipeline worker --concurrency N`, ONE
     process with concurrency N, on a benchmark-private queue `pp_bench_<random>` (deleted at the
     end). One task per event (`payments_pipeline.process_webhook_event`, args `[id]`), or
     with `--celery-ids N` one `process_webhook_events` task per N ids, is published with the
     workers stopped, then the workers start and the drain is timed. Skipped,
     with a note, if this tree has no celery engine.
   The clock includes the workers' start-up (imports, connecting), reported on its own too, with
   the rate after it; CPU: `getrusage(RUSAGE_CHILDREN)` of the waited workers and /proc of
   PostgreSQL's backends for the database. Before its first run every engine is started once
   with one worker and stopped (it must come up; also warms the OS caches).
3. `--latency`: `payments-pipeline serve --workers 2 --dispatch <engine>` and its workers (celery:
   one `worker --concurrency 2`; table: 2 `worker` processes, for comparison), offered
   `--latency-rate` signed deliveries/s for `--latency-seconds` by an open-loop generator (asyncio,
   raw HTTP/1.1 on keep-alive connections, each request fired at its scheduled time whatever the
   answers); then `processed_at - created_at` of every event from the database: p50/p99/max.
4. `--backlog [N]` (100,000 if no N): N stuck events (`received`, `dispatched_at` NULL, created
   30 minutes ago), the engine's workers started (table: 2; celery: concurrency 2), then one
   `payments-pipeline requeue-stuck-webhooks --json` with `PAYMENTS_DISPATCH=<engine>` (no
   DAGSTER_HOME): the sweep's own time (its process, start to exit) and sweep + drain until all
   `processed`. Inside the sweep's process, from its start: its last claim (the latest
   `dispatched_at` it wrote), its last publish (its first per-event log line, written once every
   message is out; needs `--log-level info`) and its audit closed (its JSON's `finished_at`); the
   publishing is last claim -> last publish. Then the sweep
   alone once more on a fresh copy of the backlog through a temporary DAGSTER_HOME (the repo's
   `dagster_home/dagster.yaml`), to time the Dagster run (`--no-backlog-dagster` skips it).

Every database, worktree, queue and subprocess is removed or stopped at the end, also on error,
Ctrl-C or SIGTERM (subprocesses by pid: SIGTERM, then SIGKILL to their process group after
`--grace`). Every wait is bounded by `--timeout` per phase. PostgreSQL only.

    .venv/bin/python benchmarks/processing_benchmark.py          # drain: 3 engines x 1, 2, 4, 8
    .venv/bin/python benchmarks/processing_benchmark.py --engines baseline,table --workers 1,2 \\
        --events 5000
    .venv/bin/python benchmarks/processing_benchmark.py --no-drain --latency --backlog \\
        --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import harness
import sqlalchemy as sa
from harness import fmt, progress, verdict

from payments_pipeline import store
from payments_pipeline.models import utcnow
from payments_pipeline.providers.samples import stripe_event
from payments_pipeline.providers.stripe import sign_payload

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
TASK_NAME = "payments_pipeline.process_webhook_event"  # one id a message (before issue 19)
BATCH_TASK_NAME = "payments_pipeline.process_webhook_events"  # a list of ids (issue 19)
ENGINES = ("baseline", "table", "celery")
SECRET = "whsec_benchmark_" + secrets.token_hex(8)
MAX_SIGNED_SECONDS = 240  # Stripe's signature tolerance is 300 s; every delivery is signed upfront
INSERT_CHUNK = 5_000

# The issue's targets.
TARGET_EVENTS_PER_S = 1_500
TARGET_FLOOR_RATIO = 0.25
TARGET_MAX_DROP = 0.10
TARGET_P99_MS = 100.0
TARGET_BACKLOG_S = 90.0
TARGET_BACKLOG_EVENTS = 100_000
TARGET_PUBLISH_S = 5.0  # the backlog sweep's publishing


# --- databases ------------------------------------------------------------------------------------


def insert_events(url: str, count: int, run: str, *, stuck: bool) -> float:
    """`count` Stripe `payment_intent.succeeded` events, one `pi_` payment each; claimed and not
    started (`stuck=False`) or received 30 minutes ago and never dispatched (`stuck=True`).
    Then VACUUM ANALYZE, so every run starts from the same statistics. Returns the seconds."""
    started = time.perf_counter()
    now = utcnow()
    created = now - dt.timedelta(minutes=30) if stuck else now
    unix = int(created.replace(tzinfo=dt.UTC).timestamp())
    engine = store.make_engine(url)
    try:
        with engine.begin() as conn:
            for first in range(0, count, INSERT_CHUNK):
                rows = []
                for i in range(first, min(first + INSERT_CHUNK, count)):
                    event_id = f"evt_{run}_{i}"
                    payload = stripe_event(
                        event_id,
                        reference=f"pi_{run}_{i}",
                        amount=1000 + i % 50_000,
                        created=unix,
                        object_fields={
                            "status": "succeeded",
                            "customer": f"cus_{run}{i % 1000}",
                            "description": f"Order {i}",
                            "metadata": {"order_id": str(i)},
                            "latest_charge": f"ch_{run}_{i}",
                        },
                        api_version="2024-06-20",
                        pending_webhooks=1,
                        request={"id": f"req_{run}_{i}", "idempotency_key": secrets.token_hex(8)},
                    )
                    rows.append(
                        {
                            "provider": "stripe",
                            "provider_event_id": event_id,
                            "event_type": "payment_intent.succeeded",
                            "payload": payload,
                            "dispatched_at": None if stuck else now,
                            "created_at": created,
                            "updated_at": created,
                        }
                    )
                store.insert_events(conn, rows=rows)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE webhook_events")
    finally:
        engine.dispose()
    return time.perf_counter() - started


class Progress:
    """One autocommit connection that counts `processed` events (and sees other backends)."""

    def __init__(self, url: str) -> None:
        self.engine = store.make_engine(url, poolclass=sa.NullPool)
        self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.database = str(sa.make_url(url).database)
        self.backend_pid = int(self.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        self.polls = 0
        self.poll_seconds = 0.0

    def processed(self) -> int:
        started = time.perf_counter()
        n = self.conn.exec_driver_sql(
            "SELECT count(*) FROM webhook_events WHERE status = 'processed'"
        ).scalar_one()
        self.polls += 1
        self.poll_seconds += time.perf_counter() - started
        return int(n)

    def other_backends(self) -> int:
        return int(
            self.conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).scalar_one()
        )

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


# --- CPU ------------------------------------------------------------------------------------------


def postgres_cpu(database: str, exclude: int) -> float:
    """utime + stime of the PostgreSQL backends of `database` now (not the poller's)."""
    return sum(harness.process_cpu(pid) for pid in harness.backend_pids(database) if pid != exclude)


# --- subprocesses ---------------------------------------------------------------------------------


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path

    def exit_note(self, what: str, lines: int = 2) -> str | None:
        """`<what> exited with <code>: <log tail>` once the process has ended, else None."""
        if self.process.poll() is None:
            return None
        return f"{what} exited with {self.process.returncode}: {self.tail(lines)}"

    def tail(self, lines: int = 5) -> str:
        with suppress(OSError):
            text = self.log.read_text(errors="replace").strip().splitlines()
            return " | ".join(text[-lines:])
        return ""


class Processes:
    """Subprocesses started in sessions of their own (so a terminal's Ctrl-C reaches only us, and
    a SIGKILL reaches their children), stopped by pid: SIGTERM, then SIGKILL after `grace`."""

    def __init__(self, log_dir: Path, grace: float) -> None:
        self.log_dir = log_dir
        self.grace = grace
        self.procs: list[Proc] = []
        self._n = 0

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        stdout: IO[bytes] | None = None,
    ) -> Proc:
        """Output to a log file of its own (stdout to `stdout` if given, stderr to the log)."""
        self._n += 1
        log = self.log_dir / f"{self._n:02d}-{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(command),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out if stdout is None else stdout,
                stderr=out if stdout is not None else subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(process, log)
        self.procs.append(proc)
        return proc

    def exited(self) -> list[Proc]:
        return [p for p in self.procs if p.process.poll() is not None]

    def stop_all(self) -> None:
        procs, self.procs = self.procs, []
        for p in procs:
            if p.process.poll() is None:
                with suppress(ProcessLookupError):
                    p.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for p in procs:
            try:
                p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                progress(
                    f"pid {p.process.pid} still running {self.grace:.0f} s after SIGTERM: SIGKILL"
                )
            # The whole session (process group): a pool child left behind dies with it.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(p.process.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                p.process.wait(timeout=30)


# --- engines --------------------------------------------------------------------------------------


@dataclass
class Engine:
    """How to run one engine: a command (`payments-pipeline` of some tree) and its environment."""

    name: str
    command: list[str]
    cwd: Path
    commit: str
    env: dict[str, str] = field(default_factory=dict)
    missing: str | None = None  # why it cannot run here (then it is skipped with this note)

    @property
    def celery(self) -> bool:
        return self.name == "celery"

    @property
    def dispatch(self) -> str:
        return "celery" if self.celery else "table"

    def migrate_with(self) -> list[str] | None:
        """The baseline migrates its database with its own code; this tree's engines in process."""
        return self.command if self.name == "baseline" else None

    def environment(self, url: str, **extra: str) -> dict[str, str]:
        # PAYMENTS_DISPATCH always: newer workers need it, older code ignores it.
        return (
            harness.clean_env(PAYMENTS_DATABASE_URL=url, PAYMENTS_DISPATCH=self.dispatch)
            | self.env
            | extra
        )

    def start_workers(self, procs: Processes, url: str, workers: int, log_level: str) -> list[Proc]:
        base = [*self.command, "--log-level", log_level, "worker"]
        env = self.environment(url)
        if self.celery:
            return [
                procs.start(
                    f"{self.name}-worker", [*base, "--concurrency", str(workers)], env, self.cwd
                )
            ]
        return [procs.start(f"{self.name}-worker{i}", base, env, self.cwd) for i in range(workers)]


def this_tree_command() -> list[str]:
    script = Path(sys.prefix) / "bin" / "payments-pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "payments_pipeline.cli"]


def celery_missing() -> str | None:
    """Why this tree has no usable celery engine, or None."""
    probe = subprocess.run(
        [sys.executable, "-c", "import payments_pipeline.dispatch.celery"],
        cwd=harness.REPO,
        env=harness.clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"this tree has no celery engine (import payments_pipeline.dispatch.celery: {last})"
    try:
        import celery  # noqa: F401  (the benchmark publishes the drain's tasks with it)
        import kombu  # noqa: F401
    except ImportError as exc:
        return f"celery/kombu not importable by the benchmark: {exc}"
    return None


# --- celery broker (the benchmark's own publishing and cleanup) -----------------------------------


class Broker:
    """The benchmark's side of RabbitMQ: publish the drain's tasks, look at, purge and delete the
    private queue. celery/kombu are imported here only, when the celery engine runs."""

    def __init__(self, url: str, queue: str, ids_per_message: int = 1) -> None:
        from celery import Celery

        self.url = url
        self.queue = queue
        self.ids_per_message = ids_per_message
        self.app = Celery("pp_bench_publisher", broker=url, set_as_current=False)
        self.app.conf.task_default_queue = queue
        self.app.conf.broker_connection_retry_on_startup = False
        self.used = False

    def _channel_call(self, method: str, **kwargs: Any) -> Any:
        from kombu import Connection

        with Connection(self.url, connect_timeout=10) as conn:
            channel = conn.channel()
            try:
                return getattr(channel, method)(**kwargs)
            finally:
                with suppress(Exception):
                    channel.close()

    def depth(self) -> tuple[int, int] | None:
        """(messages ready, consumers) of the queue; None if it does not exist."""
        try:
            ok = self._channel_call("queue_declare", queue=self.queue, passive=True)
        except Exception as exc:
            if "NOT_FOUND" in str(exc) or "404" in str(exc):
                return None
            raise
        return int(ok.message_count), int(ok.consumer_count)

    def publish(self, event_ids: Sequence[int]) -> float:
        """`--celery-ids` 1: one task per event, `payments_pipeline.process_webhook_event(id)`
        (the only message before issue 19); N > 1: `process_webhook_events([ids])`, N ids a
        message (what the receiver's coalescing makes at high rates, up to 200, and the sweep's
        chunks, 500). Returns seconds; `messages()` says how many went out.

        Into the queue as the engine's worker declared it (the preflight started one): through
        the default exchange, routing key = queue name, declaring nothing, so whatever arguments
        the engine gives its queue, ours cannot conflict with them."""
        self.used = True
        started = time.perf_counter()
        n = self.ids_per_message
        with self.app.producer_or_acquire() as producer:
            if n == 1:
                for event_id in event_ids:
                    self.app.send_task(
                        TASK_NAME, args=[event_id], queue=self.queue, producer=producer, declare=[]
                    )
            else:
                for start in range(0, len(event_ids), n):
                    chunk = list(event_ids[start : start + n])
                    self.app.send_task(
                        BATCH_TASK_NAME, args=[chunk], queue=self.queue, producer=producer,
                        declare=[],
                    )  # fmt: skip
        return time.perf_counter() - started

    def messages(self, events: int) -> int:
        return -(-events // self.ids_per_message)

    def purge(self) -> None:
        if self.depth() is not None:
            self._channel_call("queue_purge", queue=self.queue)

    def delete(self) -> None:
        """The queue and the direct exchange of its name (Celery declares both)."""
        if not self.used and self.depth() is None:
            return
        with suppress(Exception):
            self._channel_call("queue_delete", queue=self.queue)
        with suppress(Exception):
            self._channel_call("exchange_delete", exchange=self.queue)


def wait_consumers(broker: Broker, procs: list[Proc], limit: float) -> bool:
    """Until the celery worker consumes from the queue (bounded); False on timeout or exit."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(p.process.poll() is not None for p in procs):
            return False
        state = broker.depth()
        if state is not None and state[1] >= 1:
            return True
        time.sleep(0.2)
    return False


def stop_workers(procs: Processes, engine: Engine, broker: Broker | None) -> None:
    """Stop every subprocess; after a celery worker, wait (bounded) until the broker has let go
    of its consumer, and a second more: a worker started at once after another may otherwise
    find the broker still holding the old one's exclusive queues (RESOURCE_LOCKED)."""
    procs.stop_all()
    if not engine.celery or broker is None:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = broker.depth()
        if state is None or state[1] == 0:
            break
        time.sleep(0.2)
    time.sleep(1)


def wait_backends(prog: Progress, expected: int, procs: list[Proc], limit: float) -> bool:
    """Until `expected` other connections are open on our database (each table worker opens one
    when it starts); False on timeout or exit."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(p.process.poll() is not None for p in procs):
            return False
        if prog.other_backends() >= expected:
            return True
        time.sleep(0.2)
    return False


def wait_ready(
    engine: Engine,
    prog: Progress,
    broker: Broker | None,
    procs: list[Proc],
    workers: int,
    limit: float,
) -> str | None:
    """Until the workers are up; why not, or None. Celery: the worker consumes from the queue
    (required: the benchmark publishes into the queue the engine declared). Table: one open
    connection per worker on our database, a hint only (a worker that holds none is given 10 s,
    then trusted while it runs)."""
    if engine.celery:
        assert broker is not None
        ready = wait_consumers(broker, procs, limit)
    else:
        ready = wait_backends(prog, workers, procs, min(limit, 10))
    exited = [p for p in procs if p.process.poll() is not None]
    if exited:
        p = exited[0]
        return f"`worker` exited with {p.process.returncode}: {p.tail(2)}"
    if engine.celery and not ready:
        return f"the celery worker did not consume from the queue within {limit:.0f} s"
    return None


def start_ready(
    engine: Engine,
    url: str,
    workers: int,
    args: argparse.Namespace,
    procs: Processes,
    prog: Progress,
    broker: Broker | None,
) -> tuple[list[Proc], str | None]:
    """Start the engine's workers and wait (bounded) until they are up: them, and why they are
    not up, or None."""
    started = engine.start_workers(procs, url, workers, args.log_level)
    return started, wait_ready(engine, prog, broker, started, workers, min(args.timeout, 120))


# --- phase 2: drain -------------------------------------------------------------------------------


@dataclass
class Drain:
    engine: str
    workers: int
    events: int
    layout: str
    elapsed_s: float | None = None
    events_per_s: float | None = None
    processed: int = 0
    first_processed_s: float | None = None  # start -> first processed event seen (start-up)
    steady_events_per_s: float | None = None  # after the first processed event
    worker_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    insert_s: float = 0.0
    publish_s: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    poll_cpu_share: float | None = None  # wall share of the clock spent inside the count query
    error: str | None = None


@dataclass
class Waited:
    elapsed: float | None = None  # start -> all processed (None: not reached)
    first_s: float | None = None  # start -> the first poll that saw a processed event
    first_count: int = 0  # processed events at that poll
    error: str | None = None


def wait_drained(
    prog: Progress,
    expected: int,
    started: float,
    procs: list[Proc],
    limit: float,
    interval: float,
) -> Waited:
    """Poll until `expected` events are processed, a worker exits, or `limit` seconds pass. The
    interval stretches to 4x the count query's own time, so polling stays a small load."""
    waited = Waited()
    while True:
        before = time.perf_counter()
        done = prog.processed()
        now = time.monotonic()
        if done and waited.first_s is None:
            waited.first_s, waited.first_count = now - started, done
        if done >= expected:
            waited.elapsed = now - started
            return waited
        dead = [p for p in procs if p.process.poll() is not None]
        if dead:
            p = dead[0]
            waited.error = f"a worker exited with {p.process.returncode}: {p.tail(3)}"
            return waited
        if now - started > limit:
            waited.error = f"timeout: {done:,}/{expected:,} processed after {limit:.0f} s"
            return waited
        time.sleep(max(interval, 4 * (time.perf_counter() - before)))


def event_ids(url: str) -> list[int]:
    engine = store.make_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT id FROM webhook_events ORDER BY id").scalars())
    finally:
        engine.dispose()


def run_drain(
    engine: Engine,
    workers: int,
    args: argparse.Namespace,
    dbs: harness.Databases,
    procs: Processes,
    broker: Broker | None,
    run: str,
) -> Drain:
    layout = f"1 process, --concurrency {workers}" if engine.celery else f"{workers} process(es)"
    result = Drain(engine.name, workers, args.events, layout)
    with dbs.database(engine.migrate_with()) as url:
        result.insert_s = round(insert_events(url, args.events, run, stuck=False), 2)
        if engine.celery:
            assert broker is not None
            broker.purge()
            ids = event_ids(url)
            result.publish_s = round(broker.publish(ids), 2)
            deadline = time.monotonic() + 10  # publishes without confirms: let them land
            while (state := broker.depth()) is not None and state[0] < broker.messages(len(ids)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if state is None or state[0] != broker.messages(len(ids)):
                result.error = f"published {len(ids):,} tasks but the queue holds {state}"
                return result
        prog = Progress(url)
        try:
            cpu_before = harness.children_cpu()
            pg_before = postgres_cpu(prog.database, prog.backend_pid)
            started = time.monotonic()
            started_procs = engine.start_workers(procs, url, workers, args.log_level)
            try:
                waited = wait_drained(
                    prog, args.events, started, started_procs, args.timeout, args.poll_interval
                )
                pg_cpu = postgres_cpu(prog.database, prog.backend_pid) - pg_before
            finally:
                stop_workers(procs, engine, broker)
            result.worker_cpu_s = round(harness.children_cpu() - cpu_before, 2)
            result.postgres_cpu_s = round(pg_cpu, 2)
            result.error = waited.error
            result.polls = prog.polls
            if waited.first_s is not None:
                result.first_processed_s = round(waited.first_s, 2)
            if waited.elapsed is not None:
                result.elapsed_s = round(waited.elapsed, 2)
                result.events_per_s = round(args.events / waited.elapsed, 1)
                result.poll_cpu_share = round(prog.poll_seconds / waited.elapsed, 3)
                if waited.first_s is not None and waited.elapsed > waited.first_s:
                    result.steady_events_per_s = round(
                        (args.events - waited.first_count) / (waited.elapsed - waited.first_s), 1
                    )
        finally:
            prog.close()
        result.statuses = harness.count_by_status(url)
        result.processed = result.statuses.get("processed", 0)
    if broker is not None and engine.celery:
        broker.purge()  # nothing should be left; a timed-out run leaves tasks behind
    return result


def preflight(
    engine: Engine,
    args: argparse.Namespace,
    dbs: harness.Databases,
    procs: Processes,
    broker: Broker | None,
) -> str | None:
    """Start one worker on an empty database and wait until it is up (table: its connection is
    open; celery: it consumes from the queue, which it has declared), then stop it. Returns why
    it could not run, or None. Also warms the OS caches, so the first measured run is not the
    only one paying for cold imports."""
    with dbs.database(engine.migrate_with()) as url:
        prog = Progress(url)
        try:
            _started, note = start_ready(engine, url, 1, args, procs, prog, broker)
        finally:
            stop_workers(procs, engine, broker)
            prog.close()
    return note


# --- phase 3: latency through serve ---------------------------------------------------------------


@dataclass
class Offered:
    sent: int = 0
    answered: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # first scheduled send -> last send
    statuses: dict[str, int] = field(default_factory=dict)
    send_lag_ms: dict[str, float] = field(default_factory=dict)  # actual send - scheduled
    http_ms: dict[str, float] = field(default_factory=dict)  # answer - scheduled (open loop)
    connections: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one HTTP/1.1 response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def offer_load(
    port: int, requests: Sequence[bytes], rate: float, max_connections: int, limit: float
) -> tuple[Offered, list[int]]:
    """Open loop: request i is sent at start + i / rate on an idle keep-alive connection (the
    longest idle first, so none idles into the server's keep-alive timeout; a new one if none is
    idle), whatever the earlier answers did. A request whose reused connection turns out closed
    by the server is sent once more on a new one. Returns the totals and each request's status
    (0: no answer)."""
    loop = asyncio.get_running_loop()
    out = Offered()
    statuses = [0] * len(requests)
    idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
    lags: list[float] = []
    http: list[float] = []
    errors: Counter[str] = Counter()
    opened = 0
    pending: set[asyncio.Task[None]] = set()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        opened += 1
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            opened -= 1
            raise

    async def one(i: int, scheduled: float, conn: tuple[Any, Any] | None) -> None:
        nonlocal opened
        for attempt in (1, 2):
            try:
                if conn is None:
                    conn = await connect()
                reader, writer = conn
                writer.write(requests[i])
                await writer.drain()
                status, keep = await asyncio.wait_for(_read_response(reader), timeout=30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if conn is not None:
                    opened -= 1
                    conn[1].close()
                conn = None
                # A reused connection the server closed: nothing was read; send it once more.
                if attempt == 1 and isinstance(exc, asyncio.IncompleteReadError | OSError):
                    continue
                errors[type(exc).__name__] += 1
                return
            statuses[i] = status
            http.append(loop.time() - scheduled)
            if keep:
                idle.append(conn)
            else:
                opened -= 1
                writer.close()
            return

    for _ in range(min(32, max_connections)):
        idle.append(await connect())
    start = loop.time() + 0.2
    last_send = start
    for i in range(len(requests)):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() - start > limit:
            break
        while not idle and opened >= max_connections:
            await asyncio.sleep(0.001)
        conn = idle.popleft() if idle else None
        last_send = loop.time()
        lags.append(last_send - scheduled)
        task = asyncio.create_task(one(i, scheduled, conn))
        pending.add(task)
        task.add_done_callback(pending.discard)
        out.sent += 1
        out.connections = max(out.connections, opened)
    if pending:
        await asyncio.wait(set(pending), timeout=60)
    for _, writer in idle:
        writer.close()
    out.seconds = last_send - start
    out.answered = sum(1 for s in statuses if s)
    out.errors = sum(errors.values())
    out.error_kinds = dict(errors)
    out.statuses = {str(k): v for k, v in sorted(Counter(s for s in statuses if s).items())}
    out.send_lag_ms = harness.quantiles_ms(lags)
    out.http_ms = harness.quantiles_ms(http)
    return out, statuses


def signed_requests(port: int, run: str, count: int, tag: str) -> list[bytes]:
    now = int(time.time())
    requests = []
    for i in range(count):
        body = stripe_event(f"evt_{run}_{tag}_{i}", reference=f"pi_{run}_{tag}_{i}", created=now)
        head = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nStripe-Signature: "
            f"{sign_payload(body, SECRET, now)}\r\nContent-Length: {len(body.encode())}\r\n\r\n"
        )
        requests.append(head.encode() + body.encode())
    return requests


@dataclass
class Latency:
    engine: str
    layout: str
    rate: float
    seconds: float
    warmup_s: float
    offered: dict[str, Any] | None = None  # an Offered
    achieved_rate: float | None = None
    events: int = 0  # measured (after the warm-up) and accepted
    processed: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)  # processed_at - created_at
    backlog_after_s: float | None = None  # last request -> everything processed
    statuses: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def serve_settings(args: argparse.Namespace) -> dict[str, str]:
    """`--coalesce-ms`, for the receiver (unset: the tree's default)."""
    if args.coalesce_ms is None:
        return {}
    return {"PAYMENTS_DISPATCH_COALESCE_MS": str(args.coalesce_ms)}


def run_latency(
    engine: Engine,
    args: argparse.Namespace,
    dbs: harness.Databases,
    procs: Processes,
    broker: Broker | None,
    run: str,
) -> Latency:
    workers = args.latency_workers
    layout = (
        f"serve --workers 2 --dispatch celery; 1 worker --concurrency {workers}"
        if engine.celery
        else f"serve --workers 2 --dispatch table; {workers} worker processes"
    )
    result = Latency(
        engine.name, layout, args.latency_rate, args.latency_seconds, args.latency_warmup
    )
    with dbs.database(engine.migrate_with()) as url:
        if broker is not None and engine.celery:
            broker.purge()
        prog = Progress(url)
        try:
            started, result.error = start_ready(engine, url, workers, args, procs, prog, broker)
            if result.error:
                return result
            port = harness.free_port()
            serve = procs.start(
                f"{engine.name}-serve",
                [*engine.command, "--log-level", args.log_level, "serve", "--port", str(port),
                 "--workers", "2", "--dispatch", engine.dispatch],
                engine.environment(url, STRIPE_WEBHOOK_SECRET=SECRET, **serve_settings(args)),
                engine.cwd,
            )  # fmt: skip
            result.error = harness.wait_healthy(
                port, lambda: serve.exit_note("serve"), min(args.timeout, 120)
            )
            if result.error:
                return result
            warm = int(args.latency_rate * args.latency_warmup)
            main = int(args.latency_rate * args.latency_seconds)
            requests = signed_requests(port, run, warm, "w") + signed_requests(port, run, main, "m")
            offered, statuses = asyncio.run(
                offer_load(port, requests, args.latency_rate, args.max_connections, args.timeout)
            )
            sent_done = time.monotonic()
            accepted = sum(1 for s in statuses if s == 200)
            result.offered = asdict(offered)
            if offered.seconds > 0:  # sent / (first -> last send), warm-up included
                result.achieved_rate = round(offered.sent / offered.seconds, 1)
            waited = wait_drained(
                prog, accepted, sent_done, started, args.timeout, args.poll_interval
            )
            if waited.elapsed is not None:
                result.backlog_after_s = round(waited.elapsed, 2)
            result.error = waited.error
        finally:
            stop_workers(procs, engine, broker)
            prog.close()
        engine_db = store.make_engine(url, poolclass=sa.NullPool)
        try:
            with engine_db.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT created_at, processed_at FROM webhook_events "
                        "WHERE provider_event_id LIKE :main"
                    ),
                    {"main": f"evt_{run}_m_%"},
                ).all()
        finally:
            engine_db.dispose()
        result.events = len(rows)
        done = [(p - c).total_seconds() for c, p in rows if p is not None]
        result.processed = len(done)
        result.latency_ms = harness.quantiles_ms(done)
        result.statuses = harness.count_by_status(url)
    return result


# --- phase 4: backlog -----------------------------------------------------------------------------


@dataclass
class Backlog:
    engine: str
    layout: str
    events: int
    insert_s: float = 0.0
    sweep_s: float | None = None  # the sweep's process, start -> exit
    sweep_dispatched: int | None = None
    # Inside the sweep's process, from its start (`started_at` of its JSON) to: its last claim
    # (the latest `dispatched_at` it wrote), its last publish (its first per-event log line,
    # written once `dispatch_many` has returned), its audit closed (`finished_at`).
    sweep_claimed_s: float | None = None
    sweep_published_s: float | None = None
    sweep_finished_s: float | None = None
    sweep_and_drain_s: float | None = None
    processed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    dagster_sweep_s: float | None = None  # the same sweep through DAGSTER_HOME, no workers
    dagster_dispatched: int | None = None
    dagster_error: str | None = None


def parse_summary(stdout: str) -> dict[str, Any] | None:
    """The sweep's `--json` object (tolerating lines printed before it)."""
    text = stdout.strip()
    for start in [0, *(m.start() for m in re.finditer(r"^\{", text, re.MULTILINE))]:
        with suppress(ValueError):
            value = json.loads(text[start:])
            if isinstance(value, dict):
                return value
    return None


@dataclass
class SweepCli:
    """One `requeue-stuck-webhooks --json` process: its wall time, what it printed, its log."""

    seconds: float
    log: Path
    summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def dispatched(self) -> int | None:
        return None if self.summary is None else int(self.summary["total"]["dispatched"])


# `dispatch_claimed` logs one of these per event after `dispatch_many` has returned.
PER_EVENT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: webhook event (requeued|dispatch failed)"
)


def first_per_event_line(log: Path) -> dt.datetime | None:
    """When the sweep logged its first per-event line (naive UTC, as the product stores time):
    every message was published by then. None below `--log-level info`."""
    with log.open(errors="replace") as lines:
        for line in lines:
            if match := PER_EVENT_LINE.match(line):
                local = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                return local.astimezone(dt.UTC).replace(tzinfo=None)
    return None


def sweep_timeline(url: str, sweep: SweepCli) -> tuple[float | None, ...]:
    """Seconds from the sweep's start to its last claim, its last publish and its audit closed
    (see `Backlog`); all three stamps come from the sweep process's own clock."""
    if sweep.summary is None:
        return None, None, None
    started = dt.datetime.fromisoformat(sweep.summary["started_at"].replace("Z", "+00:00"))
    finished = dt.datetime.fromisoformat(sweep.summary["finished_at"].replace("Z", "+00:00"))
    start = started.replace(tzinfo=None)
    engine = store.make_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            claimed = conn.exec_driver_sql("SELECT max(dispatched_at) FROM webhook_events").scalar()
    finally:
        engine.dispose()
    published = first_per_event_line(sweep.log)
    return (
        None if claimed is None else round((claimed - start).total_seconds(), 2),
        None if published is None else round((published - start).total_seconds(), 2),
        round((finished - started).total_seconds(), 2),
    )


def run_sweep_cli(
    engine: Engine, url: str, args: argparse.Namespace, procs: Processes, name: str, **extra: str
) -> SweepCli:
    """`requeue-stuck-webhooks --json` once, bounded by `--timeout`. Its JSON (one entry per
    event: megabytes at 100k) goes to a file, its logs to another."""
    command = [*engine.command, "--log-level", args.log_level, "requeue-stuck-webhooks", "--json"]
    out_path = procs.log_dir / f"{name}.json"
    started = time.monotonic()
    with out_path.open("wb") as out:
        proc = procs.start(name, command, engine.environment(url, **extra), engine.cwd, stdout=out)
        try:
            proc.process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            procs.stop_all()
            error = f"sweep still running after {args.timeout} s"
            return SweepCli(time.monotonic() - started, proc.log, error=error)
    seconds = time.monotonic() - started
    procs.procs.remove(proc)
    summary = parse_summary(out_path.read_text(errors="replace"))
    if proc.process.returncode != 0 or summary is None:
        error = f"sweep exited with {proc.process.returncode}: {proc.tail(3)}"
        return SweepCli(seconds, proc.log, error=error)
    return SweepCli(seconds, proc.log, summary)


def run_backlog(
    engine: Engine,
    args: argparse.Namespace,
    dbs: harness.Databases,
    procs: Processes,
    broker: Broker | None,
    run: str,
    tmp: Path,
) -> Backlog:
    workers = 2
    layout = f"1 worker --concurrency {workers}" if engine.celery else f"{workers} worker processes"
    result = Backlog(engine.name, layout, args.backlog)
    with dbs.database(engine.migrate_with()) as url:
        if broker is not None and engine.celery:
            broker.purge()
        result.insert_s = round(insert_events(url, args.backlog, run, stuck=True), 2)
        prog = Progress(url)
        try:
            started_procs, result.error = start_ready(
                engine, url, workers, args, procs, prog, broker
            )
            if result.error:
                return result
            started = time.monotonic()
            sweep = run_sweep_cli(engine, url, args, procs, f"{engine.name}-sweep")
            result.sweep_s, result.sweep_dispatched = round(sweep.seconds, 2), sweep.dispatched
            if sweep.error:
                result.error = sweep.error
            else:
                waited = wait_drained(
                    prog, args.backlog, started, started_procs, args.timeout, args.poll_interval
                )
                result.error = waited.error
                if waited.elapsed is not None:
                    result.sweep_and_drain_s = round(waited.elapsed, 2)
        finally:
            stop_workers(procs, engine, broker)
            prog.close()
        result.statuses = harness.count_by_status(url)
        result.processed = result.statuses.get("processed", 0)
        # Read after the drain, so its clock ran without this query.
        timeline = sweep_timeline(url, sweep)
        result.sweep_claimed_s, result.sweep_published_s, result.sweep_finished_s = timeline
    if args.backlog_dagster and engine.name != "baseline":
        home = tmp / f"dagster_home_{engine.name}"
        home.mkdir()
        shutil.copy(harness.REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        with dbs.database(engine.migrate_with()) as url:
            insert_events(url, args.backlog, f"{run}d", stuck=True)
            sweep = run_sweep_cli(
                engine, url, args, procs, f"{engine.name}-sweep-dagster", DAGSTER_HOME=str(home)
            )
            result.dagster_sweep_s = round(sweep.seconds, 2)
            result.dagster_dispatched, result.dagster_error = sweep.dispatched, sweep.error
        if broker is not None and engine.celery:
            broker.purge()
    return result


# --- report ---------------------------------------------------------------------------------------


def drop_check(runs: Sequence[Drain]) -> tuple[bool | None, list[str]]:
    """Each worker count against the best at fewer workers: never more than 10% below it."""
    ordered = sorted(runs, key=lambda r: r.workers)
    best: float | None = None
    ok: bool | None = True
    notes = []
    for r in ordered:
        rate = r.events_per_s
        if rate is None:
            ok = False
            notes.append(f"{r.workers}: no figure")
            continue
        if best is not None:
            ratio = rate / best
            if ratio < 1 - TARGET_MAX_DROP:
                ok = False
                notes.append(f"{r.workers} workers at {ratio:.0%} of the best below")
        best = rate if best is None else max(best, rate)
    if len([r for r in ordered if r.events_per_s is not None]) < 2:
        ok = None
    return ok, notes


def publishing_s(br: Backlog) -> float | None:
    """The backlog sweep's last claim -> its last publish."""
    if br.sweep_published_s is None or br.sweep_claimed_s is None:
        return None
    return round(br.sweep_published_s - br.sweep_claimed_s, 2)


def per_event(seconds: float | None, events: int) -> float | None:
    return None if seconds is None else seconds * 1000 / events


def render(report: dict[str, Any], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    m = report["machine"]
    add("processing benchmark")
    add(f"  command:   {report['command']}")
    add(
        f"  machine:   {m['cpu']}, {m['cores']} cores, load average before {m['load_before']}, "
        f"after {m.get('load_after', '-')}"
    )
    add(f"  postgres:  {m['postgres']}")
    add(f"  this tree: {report['commits']['this_tree']}")
    if report["commits"].get("baseline"):
        add(f"  baseline:  {report['commits']['baseline']} (--baseline {args.baseline})")
    for note in report["notes"]:
        add(f"  note: {note}")
    floor = report.get("floor")
    floor_tps = floor["tps"] if floor else None
    add("")
    if floor:
        add(f"commit floor: {floor['tps']:,.0f} transactions/s  ({floor['command']})")
    else:
        add("commit floor: not measured (--floor-seconds 0)")
    drains = [Drain(**d) for d in report["drain"]]
    if drains:
        add("")
        add(
            f"drain of {args.events:,} claimed events (clock: workers start -> all processed; "
            "celery: the tasks were published before the workers started)"
        )
        add(
            f"  {'engine':<9} {'workers':>7} {'events/s':>9} {'elapsed':>9} {'x floor':>8} "
            f"{'start-up':>9} {'steady/s':>9} {'CPU ms/event: workers':>22} {'postgres':>9}  layout"
        )
        for r in drains:
            ratio = r.events_per_s / floor_tps if r.events_per_s and floor_tps else None
            add(
                f"  {r.engine:<9} {r.workers:>7} {fmt(r.events_per_s):>9} "
                f"{fmt(r.elapsed_s, '.1f', ' s'):>9} {fmt(ratio, '.2f'):>8} "
                f"{fmt(r.first_processed_s, '.1f', ' s'):>9} {fmt(r.steady_events_per_s):>9} "
                f"{fmt(per_event(r.worker_cpu_s, r.events), '.2f'):>22} "
                f"{fmt(per_event(r.postgres_cpu_s, r.events), '.2f'):>9}  "
                f"{r.layout}"
            )
            if r.error:
                add(f"  {'':<9} {'':>7} ERROR: {r.error}")
            odd = {k: v for k, v in r.statuses.items() if k != "processed"}
            if odd:
                add(f"  {'':<9} {'':>7} not processed: {odd}")
        add(
            "  (start-up: until the first poll that saw a processed event; steady: the rate "
            "after it; CPU: getrusage of the waited workers, /proc of PostgreSQL's backends)"
        )
        by_engine: dict[str, list[Drain]] = {}
        for r in drains:
            by_engine.setdefault(r.engine, []).append(r)
        top = max(r.workers for r in drains)
        for name, runs in by_engine.items():
            ok, notes = drop_check(runs)
            add(
                f"  {name}: throughput never drops > 10% as workers are added up to {top}: "
                f"{'holds' if ok else ('n/a' if ok is None else 'DOES NOT HOLD')}"
                + (f" ({'; '.join(notes)})" if notes else "")
            )
    lat = [Latency(**d) for d in report["latency"]]
    if lat:
        add("")
        add("latency through serve (processed_at - created_at of each measured event)")
        for lr in lat:
            o = Offered(**lr.offered) if lr.offered else None
            lm = lr.latency_ms
            add(
                f"  {lr.engine:<7} offered {lr.rate:.0f}/s for {lr.seconds:.0f} s "
                f"(+{lr.warmup_s:.0f} s warm-up), achieved {fmt(lr.achieved_rate)}/s; "
                f"processed {lr.processed:,}/{lr.events:,}: p50 {fmt(lm.get('p50'), '.1f')} ms, "
                f"p99 {fmt(lm.get('p99'), '.1f')} ms, max {fmt(lm.get('max'), '.0f')} ms  "
                f"[{lr.layout}]"
            )
            if o is not None:
                add(
                    f"  {'':<7} HTTP answers {o.statuses}, errors {o.error_kinds or 0}; answer "
                    f"after the scheduled send p50 {o.http_ms.get('p50', '-')} / p99 "
                    f"{o.http_ms.get('p99', '-')} ms; generator lag p99 "
                    f"{o.send_lag_ms.get('p99', '-')} ms, max {o.send_lag_ms.get('max', '-')} ms; "
                    f"{o.connections} connections; backlog after the last request "
                    f"{fmt(lr.backlog_after_s, '.1f', ' s')}"
                )
                if lr.achieved_rate is not None and lr.achieved_rate < 0.95 * lr.rate:
                    add(
                        f"  {'':<7} WARNING: the schedule was not kept (achieved < 95% of offered:"
                        " slow answers used up the connections, or the machine is saturated)"
                    )
            if lr.error:
                add(f"  {'':<7} ERROR: {lr.error}")
    backlogs = [Backlog(**d) for d in report["backlog"]]
    if backlogs:
        add("")
        add("backlog: stuck events (received, never dispatched, created 30 min ago), one sweep")
        for br in backlogs:
            add(
                f"  {br.engine:<7} {br.events:,} events [{br.layout}]: sweep "
                f"{fmt(br.sweep_s, '.1f', ' s')} (dispatched {fmt(br.sweep_dispatched, ',')}), "
                f"sweep + drain {fmt(br.sweep_and_drain_s, '.1f', ' s')}, processed "
                f"{br.processed:,}; insert took {br.insert_s:.1f} s"
            )
            if br.sweep_finished_s is not None:
                add(
                    f"  {'':<7} inside the sweep's process, from its start: last claim "
                    f"{fmt(br.sweep_claimed_s, '.1f', ' s')}, last publish "
                    f"{fmt(br.sweep_published_s, '.1f', ' s')} (publishing "
                    f"{fmt(publishing_s(br), '.1f', ' s')}), audit closed "
                    f"{br.sweep_finished_s:.1f} s"
                )
            if br.error:
                add(f"  {'':<7} ERROR: {br.error}")
            if br.dagster_sweep_s is not None:
                add(
                    f"  {'':<7} the same sweep as a Dagster run (DAGSTER_HOME, no workers): "
                    f"{br.dagster_sweep_s:.1f} s, dispatched {fmt(br.dagster_dispatched, ',')}"
                    + (f"; ERROR: {br.dagster_error}" if br.dagster_error else "")
                )
    add("")
    add("targets")
    for line in targets(report, drains, lat, backlogs, floor_tps, args.timeout):
        add(f"  {line}")
    return "\n".join(lines)


def targets(
    report: dict[str, Any],
    drains: Sequence[Drain],
    lat: Sequence[Latency],
    backlogs: Sequence[Backlog],
    floor_tps: float | None,
    timeout: float,
) -> list[str]:
    out = []
    rated = [r for r in drains if r.events_per_s]
    if rated:
        best = max(rated, key=lambda r: r.events_per_s or 0.0)
        rate = best.events_per_s or 0.0
        out.append(
            f"best engine >= {TARGET_EVENTS_PER_S:,} events/s: {best.engine} {rate:,.0f} "
            f"({best.workers} workers): {verdict(rate >= TARGET_EVENTS_PER_S)}"
        )
        if floor_tps:
            out.append(
                f"best engine >= {TARGET_FLOOR_RATIO} x floor: {rate / floor_tps:.2f} x "
                f"{floor_tps:,.0f}: {verdict(rate / floor_tps >= TARGET_FLOOR_RATIO)}"
            )
        by_engine: dict[str, list[Drain]] = {}
        for r in drains:
            by_engine.setdefault(r.engine, []).append(r)
        top = max(r.workers for r in drains)
        checks = ", ".join(f"{n} {verdict(drop_check(rs)[0])}" for n, rs in by_engine.items())
        out.append(f"<= 10% drop as workers are added up to 8 (measured up to {top}): {checks}")
    else:
        out.append("drain targets: no drain figure")
    celery_lat = [r for r in lat if r.engine == "celery" and r.latency_ms]
    if celery_lat:
        p99 = celery_lat[0].latency_ms["p99"]
        out.append(
            f"p99 < {TARGET_P99_MS:.0f} ms at 500 events/s (celery): {p99:.1f} ms at "
            f"{celery_lat[0].rate:.0f}/s offered: {verdict(p99 < TARGET_P99_MS)}"
        )
    else:
        out.append(f"p99 < {TARGET_P99_MS:.0f} ms at 500 events/s (celery): not measured")
    for br in backlogs:
        size = "" if br.events == TARGET_BACKLOG_EVENTS else f" (only {br.events:,} events)"
        ok: bool | None = None
        if br.sweep_and_drain_s is not None:
            ok = br.sweep_and_drain_s < TARGET_BACKLOG_S
        elif (br.error or "").startswith("timeout") and timeout >= TARGET_BACKLOG_S:
            ok = False  # not drained within --timeout, itself past the target
        out.append(
            f"100k backlog swept and drained < {TARGET_BACKLOG_S:.0f} s, {br.engine}{size}: "
            f"{fmt(br.sweep_and_drain_s, '.1f', ' s')}: {verdict(ok)}"
        )
        publishing = publishing_s(br)
        out.append(
            f"the sweep's publishing < {TARGET_PUBLISH_S:.0f} s, {br.engine}{size}: "
            f"{fmt(publishing, '.1f', ' s')} (last claim -> last publish): "
            f"{verdict(None if publishing is None else publishing < TARGET_PUBLISH_S)}"
        )
    if not backlogs:
        out.append(f"100k backlog swept and drained < {TARGET_BACKLOG_S:.0f} s: not measured")
    return out


# --- main -----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of whole numbers >= 1")
    return values


def _engine_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(names) - set(ENGINES)
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"engines are {', '.join(ENGINES)}")
    return [n for n in ENGINES if n in names]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--postgres-url", default=harness.DEFAULT_POSTGRES_URL, help="maintenance URL (trust auth)"
    )
    p.add_argument("--broker-url", default=DEFAULT_BROKER, help="RabbitMQ, for the celery engine")
    p.add_argument(
        "--engines", type=_engine_list, default=list(ENGINES), help="baseline,table,celery"
    )
    p.add_argument("--workers", type=_int_list, default=[1, 2, 4, 8], help="worker counts")
    p.add_argument("--events", type=int, default=20_000, help="claimed events per drain run")
    p.add_argument("--baseline", default="6cd575f", help="commit of the baseline worker")
    p.add_argument("--floor-seconds", type=int, default=10, help="pgbench -T (0: skip)")
    p.add_argument("--no-drain", dest="drain", action="store_false", help="skip the drain runs")
    p.add_argument("--latency", action="store_true", help="also the latency run through serve")
    p.add_argument("--latency-rate", type=float, default=500.0, help="deliveries/s offered")
    p.add_argument("--latency-seconds", type=float, default=20.0, help="measured seconds")
    p.add_argument("--latency-warmup", type=float, default=3.0, help="seconds offered first")
    p.add_argument(
        "--latency-workers",
        type=int,
        default=2,
        help="the latency run's workers (celery: one worker's --concurrency; table: processes)",
    )
    p.add_argument("--max-connections", type=int, default=256, help="generator's connection cap")
    p.add_argument(
        "--backlog", type=int, nargs="?", const=TARGET_BACKLOG_EVENTS, default=None,
        help="also the backlog run, with this many stuck events (default 100,000)",
    )  # fmt: skip
    p.add_argument(
        "--no-backlog-dagster", dest="backlog_dagster", action="store_false",
        help="skip the backlog sweep through DAGSTER_HOME",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=300.0, help="seconds, per phase wait")
    p.add_argument("--grace", type=float, default=15.0, help="SIGTERM -> SIGKILL, seconds")
    p.add_argument("--poll-interval", type=float, default=0.1, help="progress poll, seconds")
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="of every payments-pipeline subprocess (info: the production default)",
    )  # fmt: skip
    p.add_argument(
        "--coalesce-ms", type=int, default=None,
        help="the latency run's PAYMENTS_DISPATCH_COALESCE_MS (unset: the tree's default)",
    )  # fmt: skip
    p.add_argument(
        "--celery-ids", type=int, default=1,
        help="ids per message the drain publishes (1: the one-id task; N: process_webhook_events)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    if args.events < 1 or (args.backlog is not None and args.backlog < 1):
        p.error("--events and --backlog must be >= 1")
    if args.latency_warmup + args.latency_seconds > MAX_SIGNED_SECONDS:
        p.error(f"warm-up + latency seconds must be <= {MAX_SIGNED_SECONDS} (signatures expire)")
    if args.latency_rate <= 0 or args.latency_seconds <= 0:
        p.error("--latency-rate and --latency-seconds must be > 0")
    return args


def build_engines(
    args: argparse.Namespace, stack: ExitStack, queue: str, notes: list[str]
) -> tuple[list[Engine], dict[str, str]]:
    commits = {"this_tree": harness.this_commit()}
    here = harness.git("rev-parse", "HEAD")
    engines = []
    for name in args.engines:
        if name == "baseline":
            tree, commit = stack.enter_context(harness.baseline_tree(args.baseline))
            commits["baseline"] = commit
            engines.append(
                Engine(name, [str(tree / ".venv" / "bin" / "payments-pipeline")], tree, commit)
            )
        elif name == "table":
            engines.append(Engine(name, this_tree_command(), harness.REPO, here))
        else:
            engine = Engine(
                name, this_tree_command(), harness.REPO, here,
                env={"PAYMENTS_CELERY_BROKER_URL": args.broker_url, "PAYMENTS_CELERY_QUEUE": queue},
            )  # fmt: skip
            engine.missing = celery_missing()
            engines.append(engine)
    return engines, commits


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    harness.interrupt_on_signals()
    run = secrets.token_hex(3)
    queue = f"pp_bench_{secrets.token_hex(4)}"
    notes: list[str] = []
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "notes": notes,
        "drain": [],
        "latency": [],
        "backlog": [],
    }
    load_before = harness.load_average()
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="processing-bench-")))
            dbs = harness.Databases(args.postgres_url, "pp_bench_processing")
            stack.callback(dbs.drop_all)
            report["machine"] = {
                "cpu": harness.cpu_model(),
                "cores": os.cpu_count(),
                "load_before": load_before,
                "postgres": dbs.server_version(),
                "python": platform.python_version(),
            }
            engines, report["commits"] = build_engines(args, stack, queue, notes)
            broker: Broker | None = None
            celery = next((e for e in engines if e.celery and e.missing is None), None)
            if celery is not None:
                broker = Broker(args.broker_url, queue, args.celery_ids)
                stack.callback(broker.delete)
                notes.append(f"celery: queue {queue} on {args.broker_url} (deleted at the end)")
            procs = Processes(tmp, args.grace)
            stack.callback(procs.stop_all)
            for engine in engines:
                if engine.missing is None:
                    progress(f"{engine.name}: preflight (one worker up and down)")
                    engine.missing = preflight(engine, args, dbs, procs, broker)
                if engine.missing:
                    notes.append(f"{engine.name} skipped: {engine.missing}")
                    progress(f"{engine.name} skipped: {engine.missing}")
            usable = [e for e in engines if e.missing is None]
            if args.floor_seconds > 0:
                progress(f"commit floor: pgbench -N -c 4 -T {args.floor_seconds}")
                report["floor"] = harness.pgbench_floor(dbs, args.floor_seconds)
                progress(f"floor {report['floor']['tps']:,.0f} transactions/s")
            if args.drain:
                for engine in usable:
                    for workers in args.workers:
                        progress(f"drain: {engine.name}, {workers} workers, {args.events:,} events")
                        r = run_drain(engine, workers, args, dbs, procs, broker, run)
                        report["drain"].append(asdict(r))
                        progress(
                            f"  {fmt(r.events_per_s)} events/s in {fmt(r.elapsed_s, '.1f', ' s')}"
                            + (f" ERROR {r.error}" if r.error else "")
                        )
            if args.latency:
                for engine in usable:
                    if engine.name == "baseline":
                        continue
                    progress(f"latency: {engine.name} at {args.latency_rate:.0f}/s")
                    lr = run_latency(engine, args, dbs, procs, broker, run)
                    report["latency"].append(asdict(lr))
                    progress(f"  {lr.latency_ms} {lr.error or ''}")
            if args.backlog:
                for engine in usable:
                    if engine.name == "baseline":
                        continue
                    progress(f"backlog: {engine.name}, {args.backlog:,} stuck events")
                    br = run_backlog(engine, args, dbs, procs, broker, run, tmp)
                    report["backlog"].append(asdict(br))
                    progress(f"  sweep {br.sweep_s} s, sweep + drain {br.sweep_and_drain_s} s")
            if args.latency and not [e for e in usable if e.celery]:
                notes.append("latency target (celery) not measured: no celery engine")
            if (args.latency or args.backlog) and any(e.name == "baseline" for e in usable):
                notes.append("latency and backlog run for this tree's engines, not the baseline")
    except KeyboardInterrupt:
        print("interrupted: workers stopped, databases dropped, worktree removed", file=sys.stderr)
        return 130
    report["total_s"] = round(time.monotonic() - started, 1)
    report["machine"]["load_after"] = harness.load_average()
    print(render(report, args))
    print(f"\ntotal {report['total_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

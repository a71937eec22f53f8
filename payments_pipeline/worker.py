"""`payments-pipeline worker`: processing in separate processes, with the table as the queue
(`Worker`), or a Celery worker on the `celery` engine's queue (`run_celery_worker`).

A claim (gate or sweep) stamps `dispatched_at` and clears `processing_started_at`; an event with
both so is *handed on and not yet started*: it is the queued job. With
`dispatch.TableDispatcher` the gate and the sweep do nothing more than that claim, and any number
of worker processes take such rows: each claims a batch with one set-based conditional statement
that skips rows another worker is claiming (`processing.claim_batch`), so N workers never take the
same event, then commits the batch's effects together (`processing.complete_attempts`).
Nothing is lost with a worker: a worker killed mid-batch leaves `processing` rows that the sweep
re-claims as `processing_stalled`, and its fenced commit can never land afterwards.

The Celery worker is Celery's own (prefork pool) on `dispatch.celery.app`; Celery is imported only
when one is started, so the table worker never loads it.

Both count their outcomes in `payments_processing_outcomes_total{outcome,engine}` and the time of
each attempt in `payments_processing_seconds{engine}` (`metrics`); `worker --metrics-port` serves
them (`MetricsEndpoint`).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from sqlalchemy import Engine

from . import metrics
from .config import Settings
from .errors import short_error
from .handlers import HandlerRegistry, default_registry
from .models import DispatchMode, ProcessOutcome
from .processing import bury_exhausted, claim_batch, complete_attempts

log = logging.getLogger(__name__)

# For this long after a poll that found events, an empty poll waits only BUSY_POLL_SECONDS: at a
# steady arrival rate the queue is often empty for a moment, and the whole poll interval would add
# up to that much to the next events' latency (p99 456 ms at 500 deliveries/s with 2 workers,
# benchmarks/processing_benchmark.py). Idle longer, a worker polls every `poll_interval`.
BUSY_WINDOW_SECONDS = 2.0
BUSY_POLL_SECONDS = 0.02
# Burying spent budgets (events whose workers died mid-attempt: rare) is a query over the queue's
# statuses; a worker polling often at a steady rate runs it at most this often.
BURY_EVERY_SECONDS = 10.0


@dataclass
class WorkerStats:
    polls: int = 0
    outcomes: Counter[ProcessOutcome] = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        return self.outcomes[ProcessOutcome.PROCESSED]


class Worker:
    """Polls for dispatched events and processes them, a claimed batch at a time, until stopped."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        registry: HandlerRegistry | None = None,
        batch: int = 50,
        poll_interval: float = 0.5,
    ) -> None:
        if batch < 1 or poll_interval <= 0:
            raise ValueError("batch must be >= 1 and poll_interval > 0")
        self.engine = engine
        self.settings = settings
        self.registry = registry or default_registry()
        self.batch = batch
        self.poll_interval = poll_interval
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._metrics = metrics.processing(DispatchMode.TABLE)
        self._last_bury = float("-inf")

    def stop(self) -> None:
        """Finish the current event, then return from `run` (SIGTERM/SIGINT call this)."""
        self._stop.set()

    def run_once(self) -> int:
        """Claim one batch of dispatched events in one statement and complete them together;
        returns how many were claimed. A batch once claimed is finished even when asked to stop
        (its events would otherwise wait for the sweep's processing timeout)."""
        started = time.perf_counter()
        attempts = claim_batch(self.engine, settings=self.settings, limit=self.batch)
        self.stats.polls += 1
        # When the queue is (nearly) drained, what is left dispatched may be events whose budget
        # was spent by workers that died mid-attempt. Cheap then, when few rows match; and at
        # most every BURY_EVERY_SECONDS, since a busy worker's batches are often short.
        now = time.monotonic()
        if (
            len(attempts) < self.batch
            and now - self._last_bury >= BURY_EVERY_SECONDS
            and (buried := self._bury(now))
        ):
            self.stats.outcomes[ProcessOutcome.DEAD] += buried
            for _ in range(buried):  # no attempt of theirs ran here: no time to observe
                self._metrics.record(ProcessOutcome.DEAD, None)
        outcomes = complete_attempts(
            self.engine, attempts, settings=self.settings, registry=self.registry
        )
        # Each attempt of the batch ran from the claim to the batch's one commit.
        self._metrics.record_batch(outcomes, time.perf_counter() - started)
        for outcome in outcomes:
            self.stats.outcomes[outcome] += 1
        return len(attempts)

    def _bury(self, now: float) -> int:
        self._last_bury = now
        return bury_exhausted(self.engine, settings=self.settings)

    def run(self, *, until: Callable[[], bool] | None = None) -> WorkerStats:
        """Poll until stopped; a database error is logged and retried after a pause, so a
        restarted database or a cut connection does not end the worker."""
        last_found = float("-inf")
        while not self._stop.is_set() and not (until and until()):
            try:
                found = self.run_once()
            except Exception as exc:  # keep polling: the next poll reconnects (pool_pre_ping)
                log.warning("worker poll failed: %s", short_error(exc))
                last_found = float("-inf")  # a failing database is polled at the full interval
                self._stop.wait(self.poll_interval)
                continue
            # A batch, even short of full, means events are arriving: poll again at once (the
            # poll interval after each would have added up to it to their latency: p50 235 ms at
            # 500 deliveries/s with 2 workers). An empty poll waits, briefly while busy.
            if found:
                last_found = time.monotonic()
                continue
            busy = time.monotonic() - last_found < BUSY_WINDOW_SECONDS
            self._stop.wait(
                min(BUSY_POLL_SECONDS, self.poll_interval) if busy else self.poll_interval
            )
        return self.stats

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("worker stopping (signal %s): finishing the current event", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def drain(engine: Engine, settings: Settings, *, registry: HandlerRegistry | None = None) -> int:
    """Process every dispatched event now, in this thread (tests, and the soak's settle phase)."""
    worker = Worker(engine, settings, registry=registry)
    total = 0
    while (found := worker.run_once()) > 0:
        total += found
        time.sleep(0)
    return total


class WorkerStartError(Exception):
    """The worker cannot start; the message is the one line the operator sees."""


class MetricsEndpoint:
    """`worker --metrics-port`: the Prometheus exposition of every process of this worker (its
    Celery pool processes included: `metrics_dir`), on `host:port`, in a daemon thread."""

    def __init__(self, host: str, port: int) -> None:
        try:
            self._server = metrics.serve_http(host, port)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise WorkerStartError(
                f"cannot serve metrics on {host}:{port}: {reason or short_error(exc)}"
            ) from None
        log.info("metrics on http://%s:%s/metrics", host, port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_celery_worker(
    settings: Settings,
    *,
    queue: str,
    concurrency: int | None,
    loglevel: str,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run a Celery worker in this process, consuming `queue`, until SIGTERM (warm shutdown:
    running tasks finish) or SIGINT; returns its exit code. The broker is checked first, so a bad
    URL or a broker that does not answer is one `WorkerStartError`, not a worker retrying forever.
    With `metrics` (host, port), this process serves the metrics its pool processes write to the
    multiprocess directory, which the caller has set up (`metrics_dir`).
    """
    from .dispatch import celery as celery_dispatch

    try:
        celery_dispatch.check_broker(settings)
    except celery_dispatch.BrokerUnavailable as exc:
        raise WorkerStartError(str(exc)) from None
    endpoint = None if metrics is None else MetricsEndpoint(*metrics)
    try:
        return _start_celery_worker(
            celery_dispatch.app, queue=queue, concurrency=concurrency, loglevel=loglevel
        )
    finally:
        if endpoint is not None:
            endpoint.close()


def _start_celery_worker(app: Any, *, queue: str, concurrency: int | None, loglevel: str) -> int:
    worker = app.Worker(
        queues=[queue],
        concurrency=concurrency,
        pool="prefork",
        loglevel=loglevel,
        # A node name per process: two workers of one name on a broker cannot both start (their
        # remote-control queue is exclusive), and several per host is the point.
        hostname=f"payments-pipeline-{os.getpid()}@{socket.gethostname()}",
        # Mingle and gossip share revoked task ids and clocks between workers at start-up (mingle
        # waits a second for replies): we never revoke, and the database orders everything.
        without_mingle=True,
        without_gossip=True,
    )
    worker.start()
    return int(worker.exitcode or 0)

"""`celery`: publish task `payments_pipeline.process_webhook_events` (a list of event ids) to
RabbitMQ; `payments_pipeline.process_webhook_event` (one id, the former message) stays accepted.

The task is a thin door onto `processing.process_events` (one set-based claim of its ids, one
commit with a fence per event, as the table worker's batch), so a Celery worker processes an event
exactly as the inline engine and the table worker do, and the database stays the source of truth:

- a message lost between the claim and a worker leaves the row `received` with `dispatched_at`
  set: the sweep finds it as `dispatch_lost`;
- a duplicate or redelivered message finds the processing claim taken and does nothing
  (`not_claimed`);
- retries are the product's, not Celery's: a failed attempt is recorded with its backoff in
  `next_attempt_at` and the sweep sends it round again (`failed_old`), so the task never calls
  `retry` and nothing is retried automatically;
- a worker killed mid-task (acks late, rejected on worker loss) gets its message redelivered; the
  attempt it started stays `processing` until the sweep reclaims it as `processing_stalled`, and
  the fence keeps the dead attempt's writes out.

Import is cheap (settings from the environment, no database, no broker connection), so the
receiver, the sweep and `celery -A payments_pipeline.dispatch.celery worker` can all load it. Each
pool process builds its own engine when it starts (`worker_process_init`) and disposes of it when
it stops: a connection pool must never cross a fork.

The task counts each outcome and the attempt's time (`metrics.processing("celery")`), loaded on
first use, so that the receiver and the sweep, which only publish, never create those series; in
`worker --metrics-port`'s pool processes they go to its multiprocess directory (`metrics_dir`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from kombu import Connection
from kombu.pools import producers
from sqlalchemy import Engine

from .. import store
from ..config import Settings, load_settings
from ..errors import short_error
from ..handlers import HandlerRegistry, default_registry
from ..models import DispatchMode, EventRef, ProcessOutcome
from ..processing import process_event, process_events
from .base import Unsent

if TYPE_CHECKING:
    from ..metrics import ProcessingMetrics

log = logging.getLogger(__name__)

TASK_NAME = "payments_pipeline.process_webhook_event"  # one id: messages from before batches
BATCH_TASK_NAME = "payments_pipeline.process_webhook_events"  # a list of ids
# A broker that does not answer within this long fails the publish (and the worker's start-up
# check): the receiver's dispatch threads and a sweep must not hang on it. The event is safe
# either way: its row is committed, and the sweep sends it again.
BROKER_CONNECT_TIMEOUT_SECONDS = 3.0
# One more try over a fresh connection: a pooled connection the broker closed while it sat idle
# fails its first publish, and that is no reason to leave the event to the sweep. No more than one,
# so a broker that is down fails the publish at once.
PUBLISH_RETRY_POLICY: dict[str, float | int] = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}


# Ids a message carries at most (`CeleryDispatcher.dispatch_many`): a few hundred, so the claim and
# the commit of one message cost about what the table worker's batch does, and a pool process
# killed mid-message leaves a bounded number of events to the sweep's `processing_stalled`.
MESSAGE_IDS = 500

# Messages each pool process may hold beyond the one it runs (`configure`).
PREFETCH_MULTIPLIER = 4


def task_time_limits(processing_timeout: dt.timedelta) -> tuple[float, float]:
    """(soft, hard) task time limits in seconds, both below the processing timeout.

    The sweep reclaims an attempt older than the processing timeout (`processing_stalled`), so the
    task must end first: at the soft limit the handler gets `SoftTimeLimitExceeded` and the attempt
    is recorded `failed` with its backoff; at the hard limit the pool process is killed and its
    transaction rolled back. Either way no second attempt starts while the first still runs.
    """
    timeout = processing_timeout.total_seconds()
    if timeout <= 0:
        raise ValueError(f"the processing timeout must be positive, got {timeout:g} s")
    hard = timeout - min(60.0, timeout / 10)
    soft = hard - min(30.0, hard / 10)
    return soft, hard


def configure(app: Celery, settings: Settings) -> None:
    """The app's settings: broker, queue, delivery guarantees, JSON only, no result backend."""
    soft, hard = task_time_limits(settings.processing_timeout)
    app.conf.update(
        broker_url=settings.celery_broker_url,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_SECONDS,
        # A worker waits for a broker that is restarting (it was reachable when it started).
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.celery_queue,
        # Ack after processing, and give the message back if the pool process dies mid-task: a
        # redelivery costs one `not_claimed`, a lost message costs a sweep interval.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A message carries a batch (a sweep's chunk of a few hundred ids, or the few ids the
        # receiver coalesced in milliseconds): short work each, where Celery's advice is a larger
        # prefetch, so a pool process never waits a broker round trip (ack, then the next
        # delivery) between two messages. Not more: a reserved message waits in the worker's main
        # process while the pool is busy, and a long handler would hold its ids back; with acks
        # late, whatever a dead worker had reserved is delivered again.
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
        # The outcome is in the database; a result backend would be a second, weaker copy.
        result_backend=None,
        task_ignore_result=True,
        task_soft_time_limit=soft,
        task_time_limit=hard,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
    )


_settings = load_settings()
app = Celery("payments_pipeline")
configure(app, _settings)


class _ProcessState:
    """This process's engine and handlers; rebuilt after a fork (a pool never crosses one)."""

    def __init__(self) -> None:
        self.registry: HandlerRegistry | None = None
        self._metrics: ProcessingMetrics | None = None
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def open(self) -> Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                self._engine = store.make_engine(
                    _settings.database_url,
                    idle_in_transaction_timeout=_settings.processing_timeout,
                )
                self._pid = os.getpid()
            return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None and self._pid == os.getpid():
                self._engine.dispose()
            self._engine = None

    def metrics(self) -> ProcessingMetrics:
        """The task's counters, created on first use (importing prometheus-client then)."""
        if self._metrics is None:
            from .. import metrics

            self._metrics = metrics.processing(DispatchMode.CELERY)
        return self._metrics


_process = _ProcessState()


def use_registry(registry: HandlerRegistry) -> None:
    """Run `registry`'s handlers instead of `handlers.default_registry()`. Call it where the
    worker loads the app (a module of yours that imports this one, given to `celery -A`)."""
    _process.registry = registry


@worker_process_init.connect
def _open_engine(**_: Any) -> None:
    _process.open()
    _process.metrics()  # the series exist (at 0) from the pool process's start


@worker_process_shutdown.connect
def _dispose_engine(**_: Any) -> None:
    _process.close()
    from .. import metrics

    metrics.process_exiting()


def _engine_and_registry() -> tuple[Engine, HandlerRegistry]:
    # The solo and threads pools send no worker_process_init: the engine is built on first use.
    engine = _process.open()
    registry = _process.registry
    if registry is None:
        registry = _process.registry = default_registry()
    return engine, registry


def _log_not_claimed(event_id: int) -> None:
    log.info(
        "webhook event %s not claimed: processed already, or another attempt holds it "
        "(a duplicate or redelivered message)",
        event_id,
    )


# The same delivery settings on both tasks. No Celery retries (max_retries 0, nothing retried
# automatically, no retry on worker loss): the product's backoff and the sweep decide when an
# event goes round again.
_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (),
    "max_retries": 0,
    "retry_on_worker_lost": False,
}


@app.task(name=BATCH_TASK_NAME, **_TASK_OPTIONS)
def process_webhook_events(event_ids: list[int]) -> dict[str, str]:
    """One processing attempt of each event: one claim for them all, one commit
    (`processing.process_events`). A pool process killed mid-batch gets the message back; the
    copy finds the ids it had claimed `processing` (`not_claimed`) until the sweep reclaims them
    as `processing_stalled`, and the fence keeps the dead attempt's writes out. Returns each id's
    outcome (not stored: there is no result backend; read by `task_postrun` handlers)."""
    engine, registry = _engine_and_registry()
    ids = [int(i) for i in event_ids]
    started = time.perf_counter()
    outcomes = process_events(engine, ids, settings=_settings, registry=registry)
    seconds = time.perf_counter() - started
    metrics = _process.metrics()
    for event_id, outcome in outcomes.items():
        attempted = outcome is not ProcessOutcome.NOT_CLAIMED
        # Every attempt of the batch took the batch's time, claim to commit (the table worker's
        # count, `ProcessingMetrics.record_batch`).
        metrics.record(outcome, seconds if attempted else None)
        if not attempted:
            _log_not_claimed(event_id)
    return {str(event_id): outcome.value for event_id, outcome in outcomes.items()}


@app.task(name=TASK_NAME, **_TASK_OPTIONS)
def process_webhook_event(event_id: int) -> str:
    """One processing attempt of one event. Any error is `process_event`'s to record; one that
    escapes it (the database down before the claim) leaves the row for the sweep."""
    engine, registry = _engine_and_registry()
    started = time.perf_counter()
    outcome = process_event(engine, int(event_id), settings=_settings, registry=registry)
    attempted = outcome is not ProcessOutcome.NOT_CLAIMED
    _process.metrics().record(outcome, time.perf_counter() - started if attempted else None)
    if not attempted:
        _log_not_claimed(event_id)
    return outcome.value


class BrokerUnavailable(Exception):
    """The broker did not answer; the message names it (without its password)."""


def broker_connection(settings: Settings) -> Connection:
    """A (lazy) connection to `settings`' broker with the app's options.

    Publishes are not confirmed: a confirm waits for the broker to write the message to disk, which
    measured 5-7 ms per publish here against 0.5 ms without, and would cap the receiver's dispatch
    threads and stretch a large sweep. A message the broker loses after taking it is the
    `dispatch_lost` case the sweep exists for; a broker that refuses the publish still raises.
    """
    return app.connection_for_write(settings.celery_broker_url)


def check_broker(settings: Settings) -> None:
    """Connect once, or raise `BrokerUnavailable` within about `BROKER_CONNECT_TIMEOUT_SECONDS`."""
    try:
        connection = broker_connection(settings)
        where = connection.as_uri()  # the password masked
    except Exception as exc:  # an unknown transport or a malformed URL
        raise BrokerUnavailable(
            f"PAYMENTS_CELERY_BROKER_URL is not a usable broker URL: {short_error(exc)}"
        ) from None
    try:
        with connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0.5, timeout=BROKER_CONNECT_TIMEOUT_SECONDS
            )
    except Exception as exc:
        raise BrokerUnavailable(f"broker unreachable at {where}: {short_error(exc)}") from None


class CeleryDispatcher:
    """Publishes task `process_webhook_events` to `settings.celery_queue`: one id for `dispatch`,
    chunks of up to `chunk` ids for `dispatch_many` (a sweep, a replay, a reconciliation page, the
    receiver's coalesced claims).

    Publishes go through the process's pool of producers for that broker (kombu's, the one Celery
    itself uses), so the receiver's dispatch threads and a sweep reuse a few open connections
    instead of opening one per message; `dispatch_many` publishes all its chunks over one producer.
    A publish that fails raises (`dispatch`) or is returned (`dispatch_many`): the caller records it
    (`dispatch_failed` in a sweep, one log line in the receiver) and the sweep recovers the events.
    """

    def __init__(self, settings: Settings, *, chunk: int = MESSAGE_IDS) -> None:
        if chunk < 1:
            raise ValueError("a message carries at least one id")
        self.queue = settings.celery_queue
        self.chunk = chunk
        self._connection = broker_connection(settings)

    def dispatch(self, event: EventRef) -> None:
        with self._producer() as producer:
            self._publish(producer, [event.id])

    def dispatch_many(self, events: Sequence[EventRef]) -> list[Unsent]:
        """One message per `chunk` events, over one producer. Once a publish fails (the retry
        over a fresh connection included), the remaining chunks are not tried: a broker that
        refused one would most likely refuse the next, each after a connect timeout; all those
        events are returned, left to the sweep."""
        if not events:
            return []
        chunks = [events[i : i + self.chunk] for i in range(0, len(events), self.chunk)]
        try:
            with self._producer() as producer:
                for n, chunk in enumerate(chunks):
                    try:
                        self._publish(producer, [e.id for e in chunk])
                    except Exception as exc:
                        rest = [e for c in chunks[n:] for e in c]
                        return [Unsent(e, exc) for e in rest]
        except Exception as exc:  # no producer: the pool's connection could not be had
            return [Unsent(e, exc) for e in events]
        return []

    def outcomes(self) -> None:
        return None  # the Celery workers process the events

    def _producer(self) -> Any:
        return producers[self._connection].acquire(
            block=True, timeout=BROKER_CONNECT_TIMEOUT_SECONDS
        )

    def _publish(self, producer: Any, event_ids: list[int]) -> None:
        process_webhook_events.apply_async(
            args=[event_ids],
            queue=self.queue,
            producer=producer,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )

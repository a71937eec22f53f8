"""Processing after the response: a bounded queue in front of a few worker threads.

The receiver answers as soon as the gate has committed its claim; the claimed event is put on this
queue by a Starlette background task (which runs once the response has been sent), and worker
threads hand it to the `Dispatcher`. Whatever goes wrong from there (the dispatcher raises, the
queue is full, the process dies or is stopped with events still queued) leaves the row exactly as
a lost hand-off leaves it: `received` with `dispatched_at` set, which the sweep recovers as
`dispatch_lost` once `minutes` have passed. So nothing here needs to be durable, only bounded: a
burst larger than the queue costs latency for those events, never memory without limit.

Coalescing (the celery engine): a thread that takes an event waits up to `coalesce_seconds` for
more, up to `batch_size`, and hands them on together (`dispatch_many`: one message), so a message
carries one event at low rates (after at most that wait) and many at high rates. A batch that
could not be handed on leaves each of its events to the sweep, as one event's failure does.

A hand-off that fails is counted in `payments_dispatch_failures_total{provider,engine}`, per event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from payments_pipeline.dispatch import Dispatcher, dispatch_many
from payments_pipeline.errors import short_error
from payments_pipeline.models import EventRef

from .metrics import CUSTOM_DISPATCHER, receiver_metrics

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000
# The most events one coalesced hand-off carries (one message for the celery engine).
DEFAULT_BATCH_SIZE = 200


class DispatchQueue:
    """Hands claimed events to `dispatcher` on `threads` threads, at most `capacity` waiting.
    `mode` is the dispatcher's label `engine` in the failure counter (a fixed name: `inline`,
    `celery`, or `custom` for a dispatcher the caller built). With `batch_size` > 1, a thread
    hands on together the events that arrive within `coalesce_seconds` of the first, at most
    `batch_size`.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        threads: int,
        capacity: int = DEFAULT_CAPACITY,
        mode: str = CUSTOM_DISPATCHER,
        batch_size: int = 1,
        coalesce_seconds: float = 0.0,
    ) -> None:
        if threads < 1 or capacity < 1 or batch_size < 1:
            raise ValueError("threads, capacity and batch_size must be at least 1")
        if coalesce_seconds < 0:
            raise ValueError("coalesce_seconds cannot be negative")
        self.dispatcher = dispatcher
        self.batch_size = batch_size
        self.coalesce_seconds = coalesce_seconds
        self._failures = receiver_metrics().dispatch_failures_for(mode)
        self._threads_wanted = threads
        self._queue: queue.Queue[EventRef | None] = queue.Queue(maxsize=capacity)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # One thread gathers a batch at a time (the others hand theirs on meanwhile): threads
        # gathering side by side would share the events of a window, one each.
        self._gathering = threading.Lock()
        self._stop = threading.Event()
        self._closed = False

    def start(self) -> None:
        """Start the workers (idempotent; the first `offer` also starts them)."""
        with self._lock:
            if self._threads or self._closed:
                return
            for n in range(self._threads_wanted):
                # Daemon: a dispatcher stuck forever must not keep the process alive at shutdown;
                # its event is recovered by the sweep like any lost hand-off.
                thread = threading.Thread(target=self._work, name=f"dispatch-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def offer(self, event: EventRef) -> bool:
        """Queue `event` for dispatch without waiting; False if it was left for the sweep."""
        if self._closed:
            log.warning(
                "receiver is stopping: event id=%s provider=%s provider_event_id=%s left for the "
                "sweep (dispatch_lost)",
                event.id,
                event.provider.value,
                event.provider_event_id,
            )
            return False
        self.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning(
                "dispatch queue full (%s): event id=%s provider=%s provider_event_id=%s left for "
                "the sweep (dispatch_lost)",
                self._queue.maxsize,
                event.id,
                event.provider.value,
                event.provider_event_id,
            )
            return False
        return True

    async def submit(self, event: EventRef) -> None:
        """The background task's target: async so that queueing takes no threadpool hop."""
        self.offer(event)

    def _work(self) -> None:
        while True:
            batch, stopping = self._next_batch()
            try:
                if batch and not self._stop.is_set():  # a stop leaves the rest queued
                    self._hand_on(batch)
            finally:
                for _ in range(len(batch) + stopping):
                    self._queue.task_done()
            if stopping or self._stop.is_set():
                return

    def _next_batch(self) -> tuple[list[EventRef], bool]:
        """The next event and those that arrive within `coalesce_seconds`, at most `batch_size`;
        and whether `close` asked this thread to end (a None on the queue)."""
        with self._gathering:
            return self._gather()

    def _gather(self) -> tuple[list[EventRef], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.coalesce_seconds
        while len(batch) < self.batch_size:
            try:
                left = deadline - time.monotonic()
                event = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if event is None:
                return batch, True
            batch.append(event)
        return batch, False

    def _hand_on(self, batch: list[EventRef]) -> None:
        if len(batch) == 1:
            try:
                self.dispatcher.dispatch(batch[0])
            except Exception as exc:
                self._failed(batch[0], exc)
            return
        for unsent in dispatch_many(self.dispatcher, batch):
            self._failed(unsent.event, unsent.error)

    def _failed(self, event: EventRef, exc: Exception) -> None:
        self._failures[event.provider].inc()
        log.error(
            "dispatch failed id=%s provider=%s provider_event_id=%s: %s; the sweep "
            "recovers it as dispatch_lost",
            event.id,
            event.provider.value,
            event.provider_event_id,
            short_error(exc),
        )

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued event has been handed on; False if `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float) -> int:
        """Stop taking events, let the workers finish the queue for up to `timeout` seconds, then
        stop them. Returns how many events were left queued (the sweep recovers them)."""
        with self._lock:
            self._closed = True
        self.wait_idle(timeout)
        self._stop.set()
        left = self._queue.qsize()
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:  # every worker is stuck in a dispatch; they are daemons
                break
        for thread in self._threads:
            thread.join(timeout=1.0)
        if left:
            log.warning("stopped with %s event(s) not dispatched: the sweep recovers them", left)
        return left

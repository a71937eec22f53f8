"""Prometheus metrics of the doors: the registry and the scrape that the receiver (`serve`'s
`GET /metrics`) and the workers (`worker --metrics-port`) serve, and the processing counters they
share. The receiver's own counters live with it (`http.metrics`), so a worker that imports this
module loads nothing of the web server. The core (store, gate, processing, sweep, status,
providers) never imports this module: the doors count what the core returns.

Every label value comes from a fixed set (the providers, plus `unknown`; the gate's outcomes; the
refusal codes of `http.errors.ErrorCode` and their status codes; the processing outcomes; the
dispatch modes, in the label `engine`), never from a request: a scrape carries no payload,
header, path or event id.

| metric (the receiver's three: `http.metrics`) | type | labels |
| --- | --- | --- |
| `payments_processing_outcomes_total` | counter | `outcome`, `engine` |
| `payments_processing_seconds` | histogram | `engine` |

Hot paths touch only children bound in advance (`.labels(...)` once, then a dict lookup and an
`inc`/`observe`). One set of families per process (`http.metrics.receiver_metrics()`,
`processing(mode)`, each `created_once`): a metric created twice in a process would, in
multiprocess mode, keep two copies of one value.

Multiprocess mode (`metrics_dir`): when `PROMETHEUS_MULTIPROC_DIR` was set before
prometheus-client was imported, every process writes its values to files there and `scrape`
reads them all with a `MultiProcessCollector`, so one scrape of any process sums every process
of the command. Otherwise (a test, an app started another way) the values live in this process
and `scrape` reads this process's registry.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .models import DispatchMode, ProcessOutcome

CONTENT_TYPE = CONTENT_TYPE_LATEST

_P = ParamSpec("_P")
_T = TypeVar("_T")

# An attempt runs a handler; a table worker's batch commits up to `--batch` events at once.
PROCESSING_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

# This process's registry; in multiprocess mode the values are in files and `scrape` reads those.
REGISTRY = CollectorRegistry(auto_describe=True)


def multiprocess() -> bool:
    """True when prometheus-client writes values to `PROMETHEUS_MULTIPROC_DIR` (chosen at its
    import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process."""
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def scrape() -> bytes:
    """The Prometheus text exposition of everything counted (reads files: not on the loop)."""
    return generate_latest(scrape_registry())


def process_exiting(pid: int | None = None) -> None:
    """prometheus-client's bookkeeping for a process that stops (`mark_process_dead`): it drops
    the process's live gauges; its counters and histograms stay counted, so totals never go
    backwards when a worker process is replaced."""
    if multiprocess():
        mark_process_dead(os.getpid() if pid is None else pid)


class ProcessingMetrics:
    """One dispatch mode's processing counters (its label `engine`): an outcome per attempt, the
    attempt's time."""

    def __init__(self, mode: DispatchMode, outcomes: Counter, seconds: Histogram) -> None:
        self.mode = mode
        self._outcomes = {o: outcomes.labels(o.value, mode.value) for o in ProcessOutcome}
        self._seconds = seconds.labels(mode.value)

    def record(self, outcome: ProcessOutcome, seconds: float | None) -> None:
        """One outcome; `seconds` is the attempt's time (None when no attempt ran: `not_claimed`,
        or an event buried `dead` with its budget spent)."""
        self._outcomes[outcome].inc()
        if seconds is not None:
            self._seconds.observe(seconds)

    def record_batch(self, outcomes: Iterable[ProcessOutcome], seconds: float) -> None:
        """A table worker's batch: every attempt in it took the batch's time, claim to commit."""
        for outcome in outcomes:
            self._outcomes[outcome].inc()
            self._seconds.observe(seconds)


# Creating a family twice in one registry raises: the first uses of each are serialised.
_CREATING = threading.RLock()


def created_once(factory: Callable[_P, _T]) -> Callable[_P, _T]:
    """`factory`, run once per set of arguments in this process and remembered; the first calls
    are serialised (threads of the receiver and the pool may ask at the same moment)."""
    cached = functools.cache(factory)

    @functools.wraps(factory)
    def once(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with _CREATING:
            return cached(*args, **kwargs)  # type: ignore[arg-type]

    return once


@functools.cache
def _processing_families() -> tuple[Counter, Histogram]:
    outcomes = Counter(
        "payments_processing_outcomes",
        "Processing outcomes: processed, failed, dead, not_claimed, stale; by engine.",
        ("outcome", "engine"),
        registry=REGISTRY,
    )
    seconds = Histogram(
        "payments_processing_seconds",
        "Seconds one processing attempt took, from its claim to its commit (a table worker's "
        "batch: the batch's time, for each event in it).",
        ("engine",),
        buckets=PROCESSING_BUCKETS,
        registry=REGISTRY,
    )
    return outcomes, seconds


def processing(mode: DispatchMode) -> ProcessingMetrics:
    """This process's processing metrics for `mode` (`table`, `celery`, `inline`)."""
    return _processing(DispatchMode(mode))


@created_once
def _processing(mode: DispatchMode) -> ProcessingMetrics:
    return ProcessingMetrics(mode, *_processing_families())


def serve_http(host: str, port: int) -> WSGIServer:
    """Serve `scrape_registry()` on `host:port` (every path) in a daemon thread; raises `OSError`
    when the address cannot be bound. `shutdown()` then `server_close()` stop it."""
    server, _thread = start_http_server(port, addr=host, registry=scrape_registry())
    return server

"""Prometheus metrics of the doors: the receiver (`serve`'s `GET /metrics`) and the workers
(`worker --metrics-port`). The core (store, gate, processing, sweep, status, providers) never
imports this module: the doors count what the core returns.

Every label value comes from a fixed set (the providers, plus `unknown`; the gate's outcomes; the
refusal codes of `http.errors.ErrorCode` and their status codes; the processing outcomes; the
dispatch engines), never from a request: a scrape carries no payload, header, path or event id.

| metric | type | labels |
| --- | --- | --- |
| `payments_webhook_deliveries_total` | counter | `provider`, `outcome`, `status_code` |
| `payments_gate_seconds` | histogram | `provider` |
| `payments_dispatch_failures_total` | counter | `provider`, `engine` |
| `payments_processing_outcomes_total` | counter | `outcome`, `engine` |
| `payments_processing_seconds` | histogram | `engine` |

Hot paths touch only children bound in advance (`.labels(...)` once, then a dict lookup and an
`inc`/`observe`). One set of families per process (`receiver()`, `processing(engine)`): a metric
created twice in a process would, in multiprocess mode, keep two copies of one value.

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
from collections.abc import Iterable
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

from .http.errors import ErrorCode
from .models import PROVIDERS, DispatchMode, GateOutcome, ProcessOutcome, Provider

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN_PROVIDER = "unknown"  # a `/webhooks/<name>` we do not serve: the name is never a label
CUSTOM_ENGINE = "custom"  # a dispatcher given to `create_app` by its caller (tests)

# The gate is a transaction or two on a nearby database: milliseconds.
GATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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
_REGISTRY = CollectorRegistry(auto_describe=True)


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
    return _REGISTRY


def scrape() -> bytes:
    """The Prometheus text exposition of everything counted (reads files: not on the loop)."""
    return generate_latest(scrape_registry())


def process_exiting(pid: int | None = None) -> None:
    """prometheus-client's bookkeeping for a process that stops (`mark_process_dead`): it drops
    the process's live gauges; its counters and histograms stay counted, so totals never go
    backwards when a worker process is replaced."""
    if multiprocess():
        mark_process_dead(os.getpid() if pid is None else pid)


class ReceiverMetrics:
    """The receiver's counters, bound in advance for each fixed label set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "payments_webhook_deliveries",
            "Webhook deliveries answered, by provider, outcome (the gate's, or the refusal's "
            "error code) and status code.",
            ("provider", "outcome", "status_code"),
            registry=registry,
        )
        self.gate_seconds = Histogram(
            "payments_gate_seconds",
            "Seconds from handing a verified delivery to a gate thread to the gate's decision "
            "(waiting for a free gate thread included).",
            ("provider",),
            buckets=GATE_BUCKETS,
            registry=registry,
        )
        self.dispatch_failures = Counter(
            "payments_dispatch_failures",
            "Hand-offs after the answer that raised (the event is left for the sweep as "
            "dispatch_lost).",
            ("provider", "engine"),
            registry=registry,
        )
        self._answered = {
            (p, o): self.deliveries.labels(p.value, o.value, "200")
            for p in PROVIDERS
            for o in GateOutcome
        }
        self._gate = {p: self.gate_seconds.labels(p.value) for p in PROVIDERS}
        # Refusals are bound on first use: the codes are fixed, but most pairs never happen.
        self._refused: dict[tuple[Provider | None, int, ErrorCode], Counter] = {}
        self._refused_lock = threading.Lock()

    def answered(self, provider: Provider, outcome: GateOutcome) -> None:
        self._answered[provider, outcome].inc()

    def refused(self, provider: Provider | None, status: int, error: ErrorCode) -> None:
        """A refusal (4xx/5xx) on `provider`'s endpoint; None: a provider we do not serve."""
        key = (provider, status, error)
        child = self._refused.get(key)
        if child is None:
            with self._refused_lock:
                child = self._refused.get(key)
                if child is None:
                    label = UNKNOWN_PROVIDER if provider is None else Provider(provider).value
                    child = self.deliveries.labels(label, ErrorCode(error).value, str(int(status)))
                    self._refused[key] = child
        child.inc()

    def gate_time(self, provider: Provider, seconds: float) -> None:
        self._gate[provider].observe(seconds)

    def dispatch_failures_for(self, engine: str) -> dict[Provider, Counter]:
        """The failure counter of each provider for one engine, bound once per dispatch queue."""
        return {p: self.dispatch_failures.labels(p.value, engine) for p in PROVIDERS}


class ProcessingMetrics:
    """One engine's processing counters: an outcome per attempt, the attempt's time."""

    def __init__(self, engine: DispatchMode, outcomes: Counter, seconds: Histogram) -> None:
        self.engine = engine
        self._outcomes = {o: outcomes.labels(o.value, engine.value) for o in ProcessOutcome}
        self._seconds = seconds.labels(engine.value)

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


def receiver() -> ReceiverMetrics:
    """This process's receiver metrics (one set, whatever number of apps it builds)."""
    with _CREATING:
        return _receiver()


@functools.cache
def _receiver() -> ReceiverMetrics:
    return ReceiverMetrics(_REGISTRY)


@functools.cache
def _processing_families() -> tuple[Counter, Histogram]:
    outcomes = Counter(
        "payments_processing_outcomes",
        "Processing outcomes: processed, failed, dead, not_claimed, stale; by engine.",
        ("outcome", "engine"),
        registry=_REGISTRY,
    )
    seconds = Histogram(
        "payments_processing_seconds",
        "Seconds one processing attempt took, from its claim to its commit (a table worker's "
        "batch: the batch's time, for each event in it).",
        ("engine",),
        buckets=PROCESSING_BUCKETS,
        registry=_REGISTRY,
    )
    return outcomes, seconds


def processing(engine: DispatchMode) -> ProcessingMetrics:
    """This process's processing metrics for `engine` (`table`, `celery`, `inline`)."""
    with _CREATING:
        return _processing(DispatchMode(engine))


@functools.cache
def _processing(engine: DispatchMode) -> ProcessingMetrics:
    return ProcessingMetrics(engine, *_processing_families())


def serve_http(host: str, port: int) -> WSGIServer:
    """Serve `scrape_registry()` on `host:port` (every path) in a daemon thread; raises `OSError`
    when the address cannot be bound. `shutdown()` then `server_close()` stop it."""
    server, _thread = start_http_server(port, addr=host, registry=scrape_registry())
    return server

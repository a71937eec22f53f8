"""The receiver's Prometheus counters (`serve`'s `GET /metrics`), in the registry the scrape reads
(`payments_pipeline.metrics`); they live here, with the receiver, because their labels include the
refusal codes of `http.errors`, and a worker must not load the web server to count its outcomes.

| metric | type | labels |
| --- | --- | --- |
| `payments_webhook_deliveries_total` | counter | `provider`, `outcome`, `status_code` |
| `payments_gate_seconds` | histogram | `provider` |
| `payments_dispatch_failures_total` | counter | `provider`, `engine` |

`engine` is the receiver's dispatch mode (`inline`, `table`, `celery`, `none`), or `custom` for a
dispatcher given to `create_app` by its caller.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

from payments_pipeline import metrics
from payments_pipeline.models import PROVIDERS, GateOutcome, Provider

from .errors import ErrorCode

UNKNOWN_PROVIDER = "unknown"  # a `/webhooks/<name>` we do not serve: the name is never a label
CUSTOM_DISPATCHER = "custom"  # a dispatcher given to `create_app` by its caller (tests)

# The gate is a transaction or two on a nearby database: milliseconds.
GATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    def dispatch_failures_for(self, mode: str) -> dict[Provider, Counter]:
        """The failure counter of each provider for one dispatch mode (its label `engine`),
        bound once per dispatch queue."""
        return {p: self.dispatch_failures.labels(p.value, mode) for p in PROVIDERS}


@metrics.created_once
def receiver_metrics() -> ReceiverMetrics:
    """This process's receiver metrics (one set, whatever number of apps it builds)."""
    return ReceiverMetrics(metrics.REGISTRY)

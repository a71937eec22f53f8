"""The read side every door shows: counts, the oldest stuck event, dead and expired events.

`read_status` is what `payments-pipeline status` prints; `newly_stuck` is the sensor's one query;
`dead_counts` feeds the sweep's `no_dead_events` check. "Stuck" is the sweep's own definition (the
four reasons of `store.stuck`, with the same thresholds from `Settings`), so what an operator reads
here is exactly what the next sweep would pick up, and what it would count as expired.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from . import store
from .config import Settings
from .models import PROVIDERS, EventRef, EventStatus, PaymentStatus, Provider, utcnow

DEAD_SHOWN = 20


@dataclass(frozen=True)
class DeadEvent:
    event: EventRef
    last_error: str | None


@dataclass(frozen=True)
class PaymentTotals:
    """Payments of one mode (live or test): how many per status, and the sums per currency (minor
    units) of what was received and refunded."""

    by_status: dict[str, int]
    received: dict[str, int]
    refunded: dict[str, int]

    @property
    def count(self) -> int:
        return sum(self.by_status.values())

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, **dataclasses.asdict(self)}


def payment_totals(conn: Connection) -> dict[str, PaymentTotals]:
    """Live and test-mode payments apart (`"live"`, `"test"`): test money is never counted as
    real. Every status appears, zeros included."""
    modes = {
        mode: PaymentTotals({s.value: 0 for s in PaymentStatus}, {}, {})
        for mode in ("live", "test")
    }
    for live, _provider, status, currency, n, received, refunded in store.payment_totals(conn):
        totals = modes["live" if live else "test"]
        totals.by_status[status] = totals.by_status.get(status, 0) + n
        key = currency.upper() if currency else "unknown"
        if received:
            totals.received[key] = totals.received.get(key, 0) + received
        if refunded:
            totals.refunded[key] = totals.refunded.get(key, 0) + refunded
    return modes


@dataclass(frozen=True)
class StatusReport:
    taken_at: dt.datetime
    # provider -> status -> count; every known provider and status, zeros included
    counts: dict[str, dict[EventStatus, int]]
    # provider -> creation time of its oldest stuck event (any reason, any age)
    oldest_stuck: dict[str, dt.datetime]
    dead_count: int
    dead_events: tuple[DeadEvent, ...]  # the first `DEAD_SHOWN`, by id
    # provider -> stuck events older than the window: never requeued by a sweep
    expired: dict[str, int]
    payments: dict[str, PaymentTotals]  # "live" and "test"

    def oldest_stuck_age(self, provider: str) -> dt.timedelta:
        return self.taken_at - self.oldest_stuck[provider]

    def as_json(self) -> dict[str, Any]:
        """The object `payments-pipeline status --json` prints."""
        return {
            "counts": {p: {s.value: n for s, n in row.items()} for p, row in self.counts.items()},
            "oldest_stuck": {
                p: {
                    "created_at": t.isoformat() + "Z",
                    "age_seconds": int(self.oldest_stuck_age(p).total_seconds()),
                }
                for p, t in sorted(self.oldest_stuck.items())
            },
            "dead": {
                "count": self.dead_count,
                "events": [
                    {
                        "id": d.event.id,
                        "provider": d.event.provider.value,
                        "provider_event_id": d.event.provider_event_id,
                        "event_type": d.event.event_type,
                        "last_error": d.last_error,
                    }
                    for d in self.dead_events
                ],
            },
            "expired": {"count": sum(self.expired.values()), "by_provider": self.expired},
            "payments": {mode: totals.as_json() for mode, totals in self.payments.items()},
        }


def _any_stuck(settings: Settings, now: dt.datetime) -> Any:
    return store.any_stuck_condition(
        now=now,
        stuck_before=now - dt.timedelta(minutes=settings.stuck_requeue_minutes),
        stalled_before=now - settings.processing_timeout,
    )


def read_status(
    engine: Engine, settings: Settings, *, now: dt.datetime | None = None
) -> StatusReport:
    """Everything `status` shows, read in one connection."""
    now = now or utcnow()
    stuck = _any_stuck(settings, now)
    with engine.connect() as conn:
        counts = store.count_by_provider_status(conn)
        oldest = store.oldest_created_at(conn, condition=stuck)
        dead = store.list_event_refs(conn, status=EventStatus.DEAD, limit=DEAD_SHOWN)
        expired = store.count_expired(
            conn,
            conditions=[stuck],
            providers=PROVIDERS,
            created_after=now - dt.timedelta(days=settings.max_age_days),
        )
        payments = payment_totals(conn)
    providers = sorted({p.value for p in PROVIDERS} | {p for p, _ in counts})
    return StatusReport(
        taken_at=now,
        counts={p: {s: counts.get((p, s.value), 0) for s in EventStatus} for p in providers},
        oldest_stuck=oldest,
        dead_count=sum(counts.get((p, EventStatus.DEAD.value), 0) for p in providers),
        dead_events=tuple(DeadEvent(ref, err) for ref, err in dead),
        expired={p.value: expired.get(p, 0) for p in PROVIDERS},
        payments=payments,
    )


def newly_stuck(
    conn: Connection, settings: Settings, *, since: dt.datetime | None, now: dt.datetime
) -> list[store.StuckCount]:
    """Events that became stuck in `(since, now]` inside the window, per provider and reason."""
    return store.count_newly_stuck(
        conn,
        now=now,
        since=since,
        created_after=now - dt.timedelta(days=settings.max_age_days),
        minutes=settings.stuck_requeue_minutes,
        timeout_minutes=settings.processing_timeout_minutes,
    )


def dead_counts(conn: Connection, providers: Sequence[Provider]) -> dict[Provider, int]:
    """Dead events per provider (zeros included): they wait for a replay."""
    found = store.count_dead_events(conn, providers=providers)
    return {p: found.get(p, 0) for p in providers}

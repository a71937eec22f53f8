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
from .models import (
    PROVIDERS,
    EventRef,
    EventState,
    EventStatus,
    PaymentStatus,
    Provider,
    utcnow,
)
from .sweep import SweepParams

DEAD_SHOWN = 20


@dataclass(frozen=True)
class DeadDetail:
    """A dead event as the audit shows it, with the cause processing recorded: a permanent
    error (a payload no handler can read, `PermanentEventError`) makes an event dead on the
    attempt it happened, before its budget is spent; otherwise the budget ran out."""

    state: EventState
    max_attempts: int

    @property
    def event(self) -> EventRef:
        return self.state.event

    @property
    def last_error(self) -> str | None:
        return self.state.last_error

    @property
    def cause(self) -> str:
        used = self.state.attempts_used
        if used >= self.max_attempts:
            return f"retry budget spent ({used} attempts)"
        return f"permanent error on attempt {used}"


def list_dead(
    conn: Connection, providers: Sequence[Provider], *, max_attempts: int, limit: int = DEAD_SHOWN
) -> tuple[DeadDetail, ...]:
    """The first `limit` dead events of `providers`, by id, with their recorded cause."""
    states = store.list_event_states(
        conn, status=EventStatus.DEAD, providers=providers, limit=limit
    )
    return tuple(DeadDetail(s, max_attempts) for s in states)


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
    for group in store.payment_totals(conn):
        totals = modes["live" if group.livemode else "test"]
        totals.by_status[group.status] = totals.by_status.get(group.status, 0) + group.count
        key = group.currency.upper() if group.currency else "unknown"
        if group.received:
            totals.received[key] = totals.received.get(key, 0) + group.received
        if group.refunded:
            totals.refunded[key] = totals.refunded.get(key, 0) + group.refunded
    return modes


@dataclass(frozen=True)
class StatusReport:
    taken_at: dt.datetime
    # provider -> status -> count; every known provider and status, zeros included
    counts: dict[str, dict[EventStatus, int]]
    # provider -> creation time of its oldest stuck event (any reason, any age)
    oldest_stuck: dict[str, dt.datetime]
    dead_count: int
    dead_events: tuple[DeadDetail, ...]  # the first `DEAD_SHOWN`, by id
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


@dataclass(frozen=True)
class _EventsView:
    """What `status` and the backlog both read: counts per provider and status (every known
    provider, zeros included), the oldest stuck event per provider, and the expired ones."""

    counts: dict[str, dict[EventStatus, int]]
    oldest_stuck: dict[str, dt.datetime]
    expired: dict[str, int]


def _read_events(
    conn: Connection, at: store.Cutoffs, statuses: Sequence[EventStatus] | None
) -> _EventsView:
    """Counts of `statuses` (None: all of them, a scan of the table), oldest stuck and expired
    events: "stuck" by the sweep's thresholds (`at`), what the next sweep would pick up."""
    found = store.count_by_provider_status(conn, statuses=statuses)
    shown = tuple(EventStatus) if statuses is None else tuple(statuses)
    providers = sorted({p.value for p in PROVIDERS} | {k.provider for k in found})
    expired = store.count_expired(conn, at=at, providers=PROVIDERS)
    return _EventsView(
        counts={p: {s: found.get(store.StatusKey(p, s), 0) for s in shown} for p in providers},
        oldest_stuck=store.oldest_stuck(conn, at=at),
        expired={p.value: expired.get(p, 0) for p in PROVIDERS},
    )


def read_status(
    engine: Engine, settings: Settings, *, now: dt.datetime | None = None
) -> StatusReport:
    """Everything `status` shows, read in one connection."""
    now = now or utcnow()
    with engine.connect() as conn:
        view = _read_events(conn, SweepParams.from_settings(settings).cutoffs(now), None)
        dead = list_dead(conn, PROVIDERS, max_attempts=settings.max_attempts)
        payments = payment_totals(conn)
    return StatusReport(
        taken_at=now,
        counts=view.counts,
        oldest_stuck=view.oldest_stuck,
        dead_count=sum(row[EventStatus.DEAD] for row in view.counts.values()),
        dead_events=dead,
        expired=view.expired,
        payments=payments,
    )


# What the backlog counts: every status but `processed` (the history, not the backlog).
OPEN_STATUSES = (EventStatus.RECEIVED, EventStatus.PROCESSING, EventStatus.FAILED, EventStatus.DEAD)


@dataclass(frozen=True)
class Backlog:
    """What is not done yet, as numbers to plot: open events per provider and status, the oldest
    stuck event's age, dead and expired events, and (when read) live and test payments."""

    taken_at: dt.datetime
    counts: dict[str, dict[EventStatus, int]]  # provider -> open status -> count, zeros included
    oldest_stuck: dict[str, dt.datetime]  # provider -> creation time of its oldest stuck event
    stuck_since: dict[str, dt.datetime]  # provider -> when its longest-stuck event became stuck
    expired: dict[str, int]
    payments: dict[str, PaymentTotals] | None  # None: not read (the sensor's cheap refresh)
    dead_events: tuple[DeadDetail, ...] = ()  # the first `DEAD_SHOWN`, by id

    def _seconds_since(self, times: dict[str, dt.datetime], provider: str | None) -> int:
        chosen = [t for p, t in times.items() if provider in (None, p)]
        return max(0, int((self.taken_at - min(chosen)).total_seconds())) if chosen else 0

    def oldest_stuck_seconds(self, provider: str | None = None) -> int:
        """Age since creation of the oldest stuck event (of `provider`, or of any), as `status`
        shows it; 0 when nothing is stuck."""
        return self._seconds_since(self.oldest_stuck, provider)

    def longest_stuck_seconds(self, provider: str | None = None) -> int:
        """How long the longest-stuck event inside the sweeps' window has been stuck (since its
        wait ended: a retried event's backoff, a hand-off's `minutes`), 0 when none is: what a
        sweep every few minutes keeps small. Older stuck events are `expired`."""
        return self._seconds_since(self.stuck_since, provider)

    def dead(self, provider: str | None = None) -> int:
        return sum(row[EventStatus.DEAD] for p, row in self.counts.items() if provider in (None, p))

    def numbers(self) -> dict[str, int]:
        """Flat integer metrics, every key present whatever the state (a plot point per run).
        Ages are whole minutes: a plot of seconds climbing into the hundreds of thousands reads
        as noise."""
        out: dict[str, int] = {
            "longest_stuck_minutes": self.longest_stuck_seconds() // 60,
            "oldest_stuck_minutes": self.oldest_stuck_seconds() // 60,
            "dead": self.dead(),
            "expired": sum(self.expired.values()),
            "open": sum(sum(row.values()) for row in self.counts.values()),
        }
        for p, row in self.counts.items():
            out[f"{p}_longest_stuck_minutes"] = self.longest_stuck_seconds(p) // 60
            out[f"{p}_oldest_stuck_minutes"] = self.oldest_stuck_seconds(p) // 60
            out |= {f"{p}_{s.value}": n for s, n in row.items()}
            out[f"{p}_expired"] = self.expired.get(p, 0)
        if self.payments is not None:
            out |= {f"payments_{mode}": t.count for mode, t in self.payments.items()}
        return out


def read_backlog(
    conn: Connection,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    payments: bool = True,
) -> Backlog:
    """The backlog in a few index-served queries (open counts, oldest stuck, how long stuck,
    expired: each a range on a status-led index, so the cost follows the backlog, not the table),
    plus the payments table's totals when `payments` (a scan of that table: not for a tick)."""
    now = now or utcnow()
    at = SweepParams.from_settings(settings).cutoffs(now)
    view = _read_events(conn, at, OPEN_STATUSES)
    since = store.stuck_since(conn, at=at)
    return Backlog(
        taken_at=now,
        counts=view.counts,
        oldest_stuck=view.oldest_stuck,
        stuck_since=since,
        expired=view.expired,
        payments=payment_totals(conn) if payments else None,
        dead_events=list_dead(conn, PROVIDERS, max_attempts=settings.max_attempts),
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

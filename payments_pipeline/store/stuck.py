"""The four reasons an event is stuck, and the sweep's and sensor's statements built from them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, func

from ..models import (
    EventRef,
    EventStatus,
    Provider,
    SweepReason,
)
from ._rows import PROVIDERS, REF_COLUMNS, ref_from_row
from .backends import backend_for
from .schema import E

# --- the four stuck reasons ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cutoffs:
    """One look at the table: `now`, and the moments before which each wait is over (values, or
    bound parameters for a statement built once). `fresh_before` is None where an event never
    dispatched counts as stuck at once (the sweep); the sensor gives it a grace.
    `created_after` starts the sweeps' window: a stuck row created before it is expired (counted,
    never swept); the reads that split stuck rows by the window need it."""

    now: Any
    stuck_before: Any
    stalled_before: Any
    fresh_before: Any = None
    created_after: Any = None

    @classmethod
    def at(
        cls,
        now: Any,
        *,
        stuck: dt.timedelta,
        stalled: dt.timedelta,
        fresh: dt.timedelta | None = None,
        max_age: dt.timedelta | None = None,
    ) -> Cutoffs:
        return cls(
            now,
            now - stuck,
            now - stalled,
            None if fresh is None else now - fresh,
            None if max_age is None else now - max_age,
        )

    @property
    def window_start(self) -> Any:
        """`created_after`, which the reads split by the window cannot do without."""
        if self.created_after is None:
            raise ValueError("these cutoffs have no window (created_after)")
        return self.created_after


@dataclass(frozen=True, eq=False)  # columns compare into SQL, not into a bool
class StuckReason:
    """One way an event gets stuck: it is in `status`, and its `clock` column was set before the
    cutoff named `waits_for` (a NULL clock counts as long ago when `null_is_old`); `requires` is a
    further fixed condition, and `after_backoff` waits for `next_attempt_at` too."""

    reason: SweepReason
    status: EventStatus
    clock: sa.Column[Any]
    waits_for: str
    requires: ColumnElement[bool] | None = None
    null_is_old: bool = False
    after_backoff: bool = False

    def condition(self, at: Cutoffs) -> ColumnElement[bool]:
        """Stuck for this reason at `at` (the scan's WHERE; the claim repeats it verbatim)."""
        terms = [E.status == self.status.value]
        before = getattr(at, self.waits_for)
        if before is not None:
            clock = self.clock
            terms.append(
                sa.or_(clock.is_(None), clock < before) if self.null_is_old else clock < before
            )
        if self.requires is not None:
            terms.append(self.requires)
        if self.after_backoff:
            terms.append(sa.or_(E.next_attempt_at.is_(None), E.next_attempt_at <= at.now))
        return sa.and_(*terms)

    def became_stuck(self, now: Cutoffs, since: Cutoffs | None) -> ColumnElement[bool]:
        """Stuck at `now` but not yet at `since` (every stuck row when `since` is None).

        A reason that only waits on its clock stays stuck once it is, so "not yet at `since`" is
        a lower bound on the same column: a range on the column an index leads with. A failed
        event can also become stuck when its backoff ends (few rows: every failed row waits one
        out), so its window is the plain difference of the two conditions.
        """
        stuck_now = self.condition(now)
        if since is None:
            return stuck_now
        since_before = getattr(since, self.waits_for)
        if not (self.null_is_old or self.after_backoff) and since_before is not None:
            return sa.and_(stuck_now, self.clock >= since_before)
        return sa.and_(stuck_now, sa.not_(self.condition(since)))


# `dispatched_at_null` waits only in the sensor (`fresh_before`, its grace): the gate inserts new
# events already claimed, but a row written unclaimed (older code, a bulk import, a hand fix) may be
# claimed in a moment by the gate's claim 1; the grace keeps the sensor from asking a sweep for it
# too early. The sweep takes such a row at once.
STUCK_REASONS: dict[SweepReason, StuckReason] = {
    r.reason: r
    for r in (
        StuckReason(
            SweepReason.DISPATCHED_AT_NULL,
            EventStatus.RECEIVED,
            clock=E.created_at,
            waits_for="fresh_before",
            requires=E.dispatched_at.is_(None),
        ),
        StuckReason(
            SweepReason.DISPATCH_LOST,
            EventStatus.RECEIVED,
            clock=E.dispatched_at,
            waits_for="stuck_before",
        ),
        # Failed, last dispatched before `stuck_before` (or never), its backoff over.
        StuckReason(
            SweepReason.FAILED_OLD,
            EventStatus.FAILED,
            clock=E.dispatched_at,
            waits_for="stuck_before",
            null_is_old=True,
            after_backoff=True,
        ),
        StuckReason(
            SweepReason.PROCESSING_STALLED,
            EventStatus.PROCESSING,
            clock=E.processing_started_at,
            waits_for="stalled_before",
        ),
    )
}
assert set(STUCK_REASONS) == set(SweepReason)


def any_stuck(at: Cutoffs) -> ColumnElement[bool]:
    """Stuck for any reason at `at`, whatever its age."""
    return sa.or_(*(STUCK_REASONS[r].condition(at) for r in SweepReason))


def expired(at: Cutoffs) -> ColumnElement[bool]:
    """Stuck for any reason but created before the sweeps' window: what no sweep touches, and what
    only a person settles (a replay or a dismissal by id)."""
    return sa.and_(any_stuck(at), E.created_at < at.window_start)


# --- webhook events: the sweep -------------------------------------------------------------------


# What every claim that hands a waiting event on writes besides `dispatched_at`: it opens one
# attempt (`events._dispatched_since_last_attempt`), which the attempt's start closes again.
OPENS_AN_ATTEMPT: dict[str, Any] = {"processing_started_at": None}


def _claim_values(reason: SweepReason, now: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"dispatched_at": now, "updated_at": now, **OPENS_AN_ATTEMPT}
    if reason is SweepReason.PROCESSING_STALLED:
        # Back to `received` in the same statement: the stale worker's fenced commit now finds
        # its attempt gone, and the next processing claim can take the row.
        values |= {"status": EventStatus.RECEIVED.value}
    return values


def select_stuck(
    conn: Connection, *, reason: SweepReason, at: Cutoffs, providers: Sequence[Provider]
) -> list[EventRef]:
    """Candidates of one reason inside the sweeps' window, in id order (the scan)."""
    rows = conn.execute(
        sa.select(*REF_COLUMNS)
        .where(
            STUCK_REASONS[reason].condition(at),
            E.provider.in_([p.value for p in providers]),
            E.created_at >= at.window_start,
        )
        .order_by(E.id)
    )
    # Positional rows and a dict lookup: a sweep may scan 100,000 rows, and attribute access on
    # Row plus Provider(...) per row was most of the scan's time (cProfile).
    return [EventRef(i, PROVIDERS[p], key, t) for i, p, key, t in rows]


def count_expired(
    conn: Connection, *, at: Cutoffs, providers: Sequence[Provider]
) -> dict[Provider, int]:
    """Stuck rows older than the window, per provider: never touched, always counted."""
    rows = conn.execute(
        sa.select(E.provider, func.count())
        .where(expired(at), E.provider.in_([p.value for p in providers]))
        .group_by(E.provider)
    )
    return {Provider(p): int(n) for p, n in rows}


def oldest_stuck(conn: Connection, *, at: Cutoffs) -> dict[str, dt.datetime]:
    """Per provider, the creation time of its oldest event stuck at `at` (any reason, any age)."""
    rows = conn.execute(
        sa.select(E.provider, func.min(E.created_at)).where(any_stuck(at)).group_by(E.provider)
    )
    return {p: t for p, t in rows if t is not None}


def stuck_since(conn: Connection, *, at: Cutoffs) -> dict[str, dt.datetime]:
    """Per provider, the earliest moment one of its events still stuck at `at`, inside the
    sweeps' window (`at.created_after`: what a sweep takes), became stuck.

    For each reason, the least value of its clock among the stuck rows, plus its wait (from its
    cutoff to `at.now`; none where the cutoff is None); a failed event becomes stuck when its
    backoff ends, so `next_attempt_at` is its clock when set.
    One aggregate per reason and clock, each a range on a status-led index, in one round trip
    (UNION ALL).
    """
    parts: list[tuple[ColumnElement[bool], Any, dt.timedelta]] = []
    for r in STUCK_REASONS.values():
        condition = sa.and_(r.condition(at), E.created_at >= at.window_start)
        if r.after_backoff:
            parts.append(
                (sa.and_(condition, E.next_attempt_at.is_not(None)), E.next_attempt_at, _NO_WAIT)
            )
            condition = sa.and_(condition, E.next_attempt_at.is_(None))
        if r.null_is_old:
            parts.append((sa.and_(condition, r.clock.is_(None)), E.created_at, _NO_WAIT))
            condition = sa.and_(condition, r.clock.is_not(None))
        before = getattr(at, r.waits_for)
        parts.append((condition, r.clock, _NO_WAIT if before is None else at.now - before))
    query = sa.union_all(
        *(
            sa.select(sa.literal(i).label("part"), E.provider, func.min(clock).label("least"))
            .where(condition)
            .group_by(E.provider)
            for i, (condition, clock, _) in enumerate(parts)
        )
    )
    found: dict[str, dt.datetime] = {}
    for i, provider, least in conn.execute(query):
        if least is None:
            continue
        became = least + parts[i][2]
        if provider not in found or became < found[provider]:
            found[provider] = became
    return found


_NO_WAIT = dt.timedelta(0)


@dataclass(frozen=True, slots=True)
class ExpiredEvent:
    """A stuck row older than the window: never requeued, shown so someone acts on it."""

    event: EventRef
    status: EventStatus
    created_at: dt.datetime


def list_expired(
    conn: Connection, *, at: Cutoffs, providers: Sequence[Provider], limit: int
) -> list[ExpiredEvent]:
    """The oldest `limit` stuck rows older than the window, oldest first: what an operator must
    act on by hand.

    One query per reason, each a range on its status-led index, merged here: one `ORDER BY
    created_at` over the OR of the reasons could walk the `created_at` index through every old
    `processed` row before it met a stuck one."""
    found: list[ExpiredEvent] = []
    for reason in SweepReason:
        rows = conn.execute(
            sa.select(*REF_COLUMNS, E.status, E.created_at)
            .where(
                STUCK_REASONS[reason].condition(at),
                E.provider.in_([p.value for p in providers]),
                E.created_at < at.window_start,
            )
            .order_by(E.created_at, E.id)
            .limit(limit)
        )
        found += [ExpiredEvent(ref_from_row(r), EventStatus(r.status), r.created_at) for r in rows]
    found.sort(key=lambda e: (e.created_at, e.event.id))
    return found[:limit]


def claim_stuck(
    conn: Connection,
    *,
    reason: SweepReason,
    event_ids: Sequence[int],
    at: Cutoffs,
    now: dt.datetime,
) -> list[int]:
    """Claim a batch of candidates of one reason in one statement; returns the ids this call won.

    Rows locked by a concurrent claim are skipped (SKIP LOCKED), never waited on: the other sweep
    owns them. A row whose state moved since the scan (at the same `at`) no longer matches the
    repeated condition.
    """
    if not event_ids:
        return []
    condition = STUCK_REASONS[reason].condition(at)
    return backend_for(conn).update_ids_returning(
        conn, event_ids, condition, _claim_values(reason, now)
    )


# --- sensor --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckCount:
    """How many events of one provider became stuck for one reason, and the highest id."""

    provider: Provider
    reason: SweepReason
    count: int
    max_id: int


def count_newly_stuck(
    conn: Connection,
    *,
    now: dt.datetime,
    since: dt.datetime | None,
    minutes: int,
    timeout_minutes: int,
    created_after: dt.datetime,
    grace: dt.timedelta = dt.timedelta(minutes=1),
) -> list[StuckCount]:
    """Events that became stuck in `(since, now]` (every stuck one when `since` is None), per
    provider and reason: the sensor's one query, in one round trip.

    Each branch is a range on an index's leading columns ((status, dispatched_at),
    (status, processing_started_at)), so the cost follows the rows found, not the table.
    """
    wait, stalled = dt.timedelta(minutes=minutes), dt.timedelta(minutes=timeout_minutes)
    at_now = Cutoffs.at(now, stuck=wait, stalled=stalled, fresh=grace)
    at_since = (
        None if since is None else Cutoffs.at(since, stuck=wait, stalled=stalled, fresh=grace)
    )
    parts = [
        sa.select(
            sa.literal(reason.value, sa.String(32)).label("reason"),
            E.provider,
            func.count().label("n"),
            func.max(E.id).label("max_id"),
        )
        .where(
            STUCK_REASONS[reason].became_stuck(at_now, at_since),
            E.created_at >= created_after,
        )
        .group_by(E.provider)
        for reason in SweepReason
    ]
    return [
        StuckCount(Provider(row.provider), SweepReason(row.reason), int(row.n), int(row.max_id))
        for row in conn.execute(sa.union_all(*parts))
    ]

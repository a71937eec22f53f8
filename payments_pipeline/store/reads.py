"""Read-only views of the events table: status counts, event states, dead events, ping."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, func

from ..models import (
    EventState,
    EventStatus,
    Provider,
)
from ._rows import REF_COLUMNS, ref_from_row
from .schema import E

# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusKey:
    """A count's key: one provider (as stored: a row may name one this code does not know) and
    one status."""

    provider: str
    status: EventStatus


def count_by_provider_status(
    conn: Connection, *, statuses: Sequence[EventStatus] | None = None
) -> dict[StatusKey, int]:
    """Rows per provider and status: every row, or those in `statuses`. Given the statuses not
    yet done, it is one range per status on the status-led indexes, so the cost follows the
    backlog, not the history of `processed` rows (a full count of which is a scan of the table)."""
    query = sa.select(E.provider, E.status, func.count()).group_by(E.provider, E.status)
    if statuses is not None:
        query = query.where(E.status.in_([s.value for s in statuses]))
    # A status this code does not know (a newer version's, during a rolling upgrade) is left
    # out of the counts: the reports show the statuses they know, and never fail on a row.
    known = {s.value: s for s in EventStatus}
    return {StatusKey(p, known[s]): int(n) for p, s, n in conn.execute(query) if s in known}


_STATE_COLUMNS = (*REF_COLUMNS, E.status, E.attempts, E.attempts_base, E.last_error, E.updated_at)


def _state(row: Any) -> EventState:
    return EventState(
        ref_from_row(row),
        EventStatus(row.status),
        int(row.attempts),
        int(row.attempts_base),
        row.last_error,
        row.updated_at,
    )


def list_event_states(
    conn: Connection, *, status: EventStatus, providers: Sequence[Provider], limit: int
) -> list[EventState]:
    """The first `limit` events of `providers` in `status`, by id (the dead events a sweep's
    report and the backlog list): a range of the status-led indexes."""
    rows = conn.execute(
        sa.select(*_STATE_COLUMNS)
        .where(E.status == status.value, E.provider.in_([p.value for p in providers]))
        .order_by(E.id)
        .limit(limit)
    )
    return [_state(r) for r in rows]


def get_event_states(conn: Connection, *, event_ids: Sequence[int]) -> list[EventState]:
    """Where each of `event_ids` stands now, in id order (a replay's outcome per event)."""
    if not event_ids:
        return []
    rows = conn.execute(sa.select(*_STATE_COLUMNS).where(E.id.in_(list(event_ids))).order_by(E.id))
    return [_state(r) for r in rows]


# --- receiver ------------------------------------------------------------------------------------


def ping(conn: Connection) -> None:
    """Raise unless the database answers and holds our table (the receiver's /healthz).

    Reads no row: a database that accepts connections but was never migrated would fail every
    delivery, so it must not look healthy either.
    """
    conn.execute(sa.select(E.id).where(sa.false())).all()


def event_statuses(conn: Connection, *, event_ids: Sequence[int]) -> dict[int, EventStatus]:
    """The status of each of `event_ids` that exists (a replay says why it refused the others)."""
    if not event_ids:
        return {}
    rows = conn.execute(sa.select(E.id, E.status).where(E.id.in_(list(event_ids))))
    return {int(i): EventStatus(s) for i, s in rows}


def dead_since(
    conn: Connection, *, providers: Sequence[Provider], since: dt.datetime, limit: int
) -> tuple[list[int], int]:
    """The first `limit` ids (by id) of the `dead` events of `providers` that died at or after
    `since` (their `updated_at`: nothing changes a dead row but a replay), and how many match in
    all. Both read the `(status, ...)` indexes' `dead` range."""
    where = sa.and_(
        E.status == EventStatus.DEAD.value,
        E.provider.in_([p.value for p in providers]),
        E.updated_at >= since,
    )
    ids = conn.execute(sa.select(E.id).where(where).order_by(E.id).limit(limit)).scalars()
    total = conn.execute(sa.select(func.count()).where(where)).scalar_one()
    return [int(i) for i in ids], int(total)


def count_dead_events(conn: Connection, *, providers: Sequence[Provider]) -> dict[Provider, int]:
    """Dead events per provider (a Dagster check); served by the indexes led by `status`."""
    rows = conn.execute(
        sa.select(E.provider, func.count())
        .where(E.status == EventStatus.DEAD.value, E.provider.in_([p.value for p in providers]))
        .group_by(E.provider)
    )
    return {Provider(p): int(n) for p, n in rows}

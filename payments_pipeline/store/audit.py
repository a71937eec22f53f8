"""The sweep audit: sweep_runs and sweep_events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection

from ..models import (
    Provider,
    SweepKind,
    SweepOutcome,
    SweepStatus,
)
from .backends import backend_for
from .engine import changed_one
from .schema import sweep_events, sweep_runs

# --- sweep audit ---------------------------------------------------------------------------------


def insert_sweep_run(
    conn: Connection,
    *,
    started_at: dt.datetime,
    trigger: str,
    dagster_run_id: str | None,
    minutes: int,
    provider: str,
    kind: SweepKind = SweepKind.SWEEP,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    note: str | None = None,
) -> int:
    """Open an audit row (`status = running`); `window`: a reconciliation's listed window;
    `note`: why a person ran it (a dismissal's reason)."""
    window_start, window_end = window or (None, None)
    result = conn.execute(
        sa.insert(sweep_runs).values(
            started_at=started_at,
            trigger=trigger,
            dagster_run_id=dagster_run_id,
            minutes=minutes,
            provider=provider,
            status=SweepStatus.RUNNING.value,
            kind=kind.value,
            window_start=window_start,
            window_end=window_end,
            note=note,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _closing(
    which: ColumnElement[bool], finished_at: dt.datetime, status: SweepStatus, error: str | None
) -> sa.Update:
    """The UPDATE that closes the sweep runs matching `which`."""
    return (
        sa.update(sweep_runs)
        .where(which)
        .values(
            finished_at=finished_at,
            status=status.value,
            error=None if error is None else error[:500],
        )
    )


def finish_sweep_run(
    conn: Connection,
    *,
    sweep_id: int,
    finished_at: dt.datetime,
    status: SweepStatus,
    scanned: int = 0,
    dispatched: int = 0,
    skipped: int = 0,
    expired: int = 0,
    error: str | None = None,
) -> None:
    closing = _closing(sweep_runs.c.id == sweep_id, finished_at, status, error)
    conn.execute(
        closing.values(scanned=scanned, dispatched=dispatched, skipped=skipped, expired=expired)
    )


def insert_sweep_events(
    conn: Connection, *, sweep_id: int, rows: Iterable[tuple[int, str, SweepOutcome]]
) -> None:
    """The per-event audit (reason: a `SweepReason` or `replay`), one statement per batch."""
    rows = list(rows)
    if not rows:
        return
    backend_for(conn).insert_sweep_events(conn, sweep_id=sweep_id, rows=rows)


def set_sweep_event_outcome(
    conn: Connection, *, sweep_id: int, event_ids: Sequence[int], outcome: SweepOutcome
) -> None:
    if event_ids:
        conn.execute(
            sa.update(sweep_events)
            .where(sweep_events.c.sweep_id == sweep_id, sweep_events.c.event_id.in_(event_ids))
            .values(outcome=outcome.value)
        )


def fail_running_sweep_of_dagster_run(
    conn: Connection, *, dagster_run_id: str, finished_at: dt.datetime, error: str
) -> bool:
    """Close the audit row of a Dagster run that died without closing it; False if none was open."""
    running = sa.and_(
        sweep_runs.c.dagster_run_id == dagster_run_id,
        sweep_runs.c.status == SweepStatus.RUNNING.value,
    )
    failed = _closing(running, finished_at, SweepStatus.FAILED, error)
    return changed_one(conn, failed)


def _reconciled(provider: Provider) -> ColumnElement[bool]:
    return sa.and_(
        sweep_runs.c.kind == SweepKind.RECONCILE.value,
        sweep_runs.c.provider == provider.value,
        sweep_runs.c.status == SweepStatus.SUCCEEDED.value,
    )


def first_reconciled_start(conn: Connection, *, provider: Provider) -> dt.datetime | None:
    """Where the first successful reconciliation of `provider` began listing (None: never)."""
    return conn.execute(
        sa.select(sa.func.min(sweep_runs.c.window_start)).where(_reconciled(provider))
    ).scalar()


def reconciled_windows(
    conn: Connection, *, provider: Provider, ending_after: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The windows `(start, end)` of the successful reconciliations of `provider` that end after
    `ending_after`, by start: what the next reconciliation's default window follows on from."""
    rows = conn.execute(
        sa.select(sweep_runs.c.window_start, sweep_runs.c.window_end)
        .where(_reconciled(provider), sweep_runs.c.window_end > ending_after)
        .order_by(sweep_runs.c.window_start)
    )
    return [(start, end) for start, end in rows]

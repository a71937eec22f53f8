"""Audited replay: send `dead` or `processed` events round again on an operator's word.

Replay gives the event a fresh retry budget (`attempts_base = attempts`) without lowering
`attempts`, the fencing token. A replayed `processed` event cannot apply its payment effect twice:
the ledger already holds it, so its handler finds nothing left to do.

Every door replays through `replay_events`: the CLI (`replay EVENT_ID...`) and the Dagster job
`replay_webhook_events` (event ids, or the dead events of a provider since a date: `select_dead`).
Each replay is one `sweep_runs` row (who started it, the Dagster run) with one `sweep_events` row
per event it replayed (reason `replay`); the ids it refused come back with the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from . import store
from .dispatch import Dispatcher
from .models import (
    EventRef,
    EventStatus,
    Provider,
    SweepKind,
    SweepOutcome,
    SweepStatus,
    SweepTrigger,
    utcnow,
)
from .sweep import Counts, close_sweep_run

REPLAY_REASON = "replay"
REPLAYABLE = (EventStatus.DEAD, EventStatus.PROCESSED)


@dataclass(frozen=True)
class Refusal:
    """An id a replay did not send round, and what it found instead."""

    event_id: int
    status: EventStatus | None  # None: no event has this id

    @property
    def why(self) -> str:
        if self.status is None:
            return "unknown event id"
        return f"it is {self.status.value}: only dead or processed events are replayed"


@dataclass(frozen=True)
class ReplayResult:
    sweep_id: int
    replayed: tuple[EventRef, ...]
    refused: tuple[Refusal, ...]


@dataclass(frozen=True)
class DeadSelection:
    """The dead events a replay by date takes: the first `limit` by id, of `total` matching."""

    event_ids: tuple[int, ...]
    total: int

    @property
    def left_out(self) -> int:
        return self.total - len(self.event_ids)


def select_dead(
    engine: Engine, *, providers: Sequence[Provider], since: dt.datetime, limit: int
) -> DeadSelection:
    """The `dead` events of `providers` that died at or after `since` (naive UTC), oldest id
    first, at most `limit`."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    with engine.connect() as conn:
        ids, total = store.dead_since(conn, providers=providers, since=since, limit=limit)
    return DeadSelection(tuple(ids), total)


def replay_events(
    engine: Engine,
    event_ids: Sequence[int],
    dispatcher: Dispatcher,
    *,
    minutes: int,
    trigger: SweepTrigger = SweepTrigger.CLI,
    dagster_run_id: str | None = None,
    provider: str = "all",
) -> ReplayResult:
    """Requeue the given events (one conditional UPDATE) and dispatch them, with an audit row.
    `provider` is what the audit row records as the replay's scope."""
    wanted = sorted(set(event_ids))
    now = utcnow()

    def work(conn: Connection) -> tuple[int, list[EventRef], list[Refusal]]:
        sweep_id = store.insert_sweep_run(
            conn,
            started_at=now,
            trigger=trigger.value,
            dagster_run_id=dagster_run_id,
            minutes=minutes,
            provider=provider,
            kind=SweepKind.REPLAY,
        )
        won = store.requeue_for_replay(conn, event_ids=wanted, now=now)
        store.insert_sweep_events(
            conn,
            sweep_id=sweep_id,
            rows=[(i, REPLAY_REASON, SweepOutcome.DISPATCHED) for i in won],
        )
        taken = set(won)
        others = [i for i in wanted if i not in taken]
        found = store.event_statuses(conn, event_ids=others)
        refused = [Refusal(i, found.get(i)) for i in others]
        return sweep_id, store.get_event_refs(conn, event_ids=won), refused

    sweep_id, refs, refused = store.in_transaction(engine, work)
    for ref in refs:
        dispatcher.dispatch(ref)
    close_sweep_run(
        engine,
        sweep_id,
        status=SweepStatus.SUCCEEDED,
        counts=Counts(scanned=len(wanted), dispatched=len(refs), skipped=len(refused)),
    )
    return ReplayResult(sweep_id, tuple(refs), tuple(refused))

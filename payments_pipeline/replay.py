"""Audited replay: send `dead` or `processed` events, or expired stuck ones, round again on an
operator's word.

Replay gives the event a fresh retry budget (`attempts_base = attempts`) without lowering
`attempts`, the fencing token. A replayed `processed` event cannot apply its payment effect twice:
the ledger already holds it, so its handler finds nothing left to do. An expired event (stuck by
one of the sweep's reasons, but older than its window: no sweep touches it) is replayed only when
named by id, after a person looked at it.

Every door replays through `replay_events`: the CLI (`replay EVENT_ID...`) and the Dagster job
`replay_webhook_events` (event ids, or the dead events of a provider since a date: `select_dead`).
A replay that sent anything round is one `sweep_runs` row (`kind = 'replay'`: who started it, the
Dagster run) with one `sweep_events` row per event replayed (reason `replay`); the ids it refused
come back with the reason, and a replay that refused every id writes no audit row. After the
dispatch, each replayed event's state is read back (`ReplayResult.after`): inline, what processing
made of it (processed, or dead again and why).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from . import store
from .dispatch import Dispatcher, dispatch_many
from .models import (
    DISMISSED,
    EventRef,
    EventState,
    EventStatus,
    Provider,
    SweepKind,
    SweepOutcome,
    SweepStatus,
    SweepTrigger,
    utcnow,
)
from .sweep import Counts, SweepParams, close_sweep_run

REPLAY_REASON = "replay"
REPLAYABLE = (EventStatus.DEAD, EventStatus.PROCESSED)
# What the audit of each action by hand records per event: its reason and its outcome.
BY_HAND: dict[SweepKind, tuple[str, SweepOutcome]] = {
    SweepKind.REPLAY: (REPLAY_REASON, SweepOutcome.DISPATCHED),
    SweepKind.DISMISS: (DISMISSED, SweepOutcome.DISMISSED),
}


@dataclass(frozen=True)
class Refusal:
    """An id a replay or a dismissal did not take, and what it found instead."""

    event_id: int
    status: EventStatus | None  # None: no event has this id
    accepts: str = "dead, processed or expired stuck"
    verb: str = "replayed"

    @property
    def why(self) -> str:
        if self.status is None:
            return "unknown event id"
        return f"it is {self.status.value}: only {self.accepts} events are {self.verb}"


@dataclass(frozen=True)
class ByHand:
    """A person's action on events named by id (a replay, a dismissal): what counts as expired
    (`params`, the sweep's thresholds and window) and what its audit row records (`minutes`, the
    trigger, the Dagster run)."""

    params: SweepParams
    trigger: SweepTrigger = SweepTrigger.CLI
    dagster_run_id: str | None = None

    def expired_at(self, now: dt.datetime) -> store.Cutoffs:
        return self.params.cutoffs(now)

    def audit(
        self,
        conn: Connection,
        kind: SweepKind,
        taken: Sequence[int],
        *,
        now: dt.datetime,
        provider: str,
        note: str | None = None,
    ) -> int:
        """Open the action's `sweep_runs` row with one `sweep_events` row per event it took
        (reason and outcome: what `kind` records, `BY_HAND`); the audit row's id."""
        reason, outcome = BY_HAND[kind]
        sweep_id = store.insert_sweep_run(
            conn,
            started_at=now,
            trigger=self.trigger.value,
            dagster_run_id=self.dagster_run_id,
            minutes=self.params.minutes,
            provider=provider,
            kind=kind,
            note=note,
        )
        store.insert_sweep_events(
            conn, sweep_id=sweep_id, rows=[(i, reason, outcome) for i in taken]
        )
        return sweep_id


@dataclass(frozen=True)
class ReplayResult:
    sweep_id: int | None  # None: every id was refused, nothing was written
    replayed: tuple[EventRef, ...]
    refused: tuple[Refusal, ...]
    after: tuple[EventState, ...] = ()  # each replayed event as the dispatch left it

    @property
    def died_again(self) -> tuple[EventState, ...]:
        return tuple(s for s in self.after if s.status is EventStatus.DEAD)


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


def refusals(
    conn: Connection, wanted: Sequence[int], taken: Sequence[int], **why: str
) -> list[Refusal]:
    """The ids of `wanted` not `taken`, each with the status it has (one query)."""
    won = set(taken)
    others = [i for i in wanted if i not in won]
    found = store.event_statuses(conn, event_ids=others)
    return [Refusal(i, found.get(i), **why) for i in others]


def replay_events(
    engine: Engine,
    event_ids: Sequence[int],
    dispatcher: Dispatcher,
    *,
    by: ByHand,
    provider: str = "all",
) -> ReplayResult:
    """Requeue the given events (one conditional UPDATE) and dispatch them, with an audit row;
    `provider` is what the audit row records as the replay's scope."""
    wanted = sorted(set(event_ids))
    now = utcnow()

    def work(conn: Connection) -> tuple[int | None, list[EventRef], list[Refusal]]:
        won = store.requeue_for_replay(
            conn, event_ids=wanted, now=now, expired_at=by.expired_at(now)
        )
        refused = refusals(conn, wanted, won)
        if not won:
            return None, [], refused
        sweep_id = by.audit(conn, SweepKind.REPLAY, won, now=now, provider=provider)
        return sweep_id, store.get_event_refs(conn, event_ids=won), refused

    sweep_id, refs, refused = store.in_transaction(engine, work)
    if sweep_id is None:
        return ReplayResult(None, (), tuple(refused))
    unsent = dispatch_many(dispatcher, refs)
    if unsent:  # as a raising `dispatch` did: the audit stays open, the sweep recovers them
        raise unsent[0].error
    close_sweep_run(
        engine,
        sweep_id,
        status=SweepStatus.SUCCEEDED,
        counts=Counts(scanned=len(wanted), dispatched=len(refs), skipped=len(refused)),
    )
    with engine.connect() as conn:
        after = store.get_event_states(conn, event_ids=[r.id for r in refs])
    return ReplayResult(sweep_id, tuple(refs), tuple(refused), tuple(after))

"""Audited replay: send `dead` or `processed` events round again on an operator's word.

Replay gives the event a fresh retry budget (`attempts_base = attempts`) without lowering
`attempts`, the fencing token. A replayed `processed` event cannot apply its payment effect twice:
the ledger already holds it, so its handler finds nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from . import store
from .dispatch import Dispatcher
from .models import EventRef, SweepOutcome, SweepStatus, SweepTrigger, utcnow
from .sweep import Counts, close_sweep_run

REPLAY_REASON = "replay"


@dataclass(frozen=True)
class ReplayResult:
    sweep_id: int
    replayed: tuple[EventRef, ...]
    refused: tuple[int, ...]  # unknown ids, or not dead/processed


def replay_events(
    engine: Engine,
    event_ids: Sequence[int],
    dispatcher: Dispatcher,
    *,
    minutes: int,
    trigger: SweepTrigger = SweepTrigger.CLI,
) -> ReplayResult:
    """Requeue the given events (one conditional UPDATE) and dispatch them, with an audit row."""
    wanted = sorted(set(event_ids))
    now = utcnow()

    def work(conn: Connection) -> tuple[int, list[EventRef]]:
        sweep_id = store.insert_sweep_run(
            conn,
            started_at=now,
            trigger=trigger.value,
            dagster_run_id=None,
            minutes=minutes,
            provider="all",
        )
        won = store.requeue_for_replay(conn, event_ids=wanted, now=now)
        store.insert_sweep_events(
            conn,
            sweep_id=sweep_id,
            rows=[(i, REPLAY_REASON, SweepOutcome.DISPATCHED) for i in won],
        )
        return sweep_id, store.get_event_refs(conn, event_ids=won)

    sweep_id, refs = store.in_transaction(engine, work)
    for ref in refs:
        dispatcher.dispatch(ref)
    close_sweep_run(
        engine,
        sweep_id,
        status=SweepStatus.SUCCEEDED,
        counts=Counts(scanned=len(wanted), dispatched=len(refs), skipped=len(wanted) - len(refs)),
    )
    replayed_ids = {r.id for r in refs}
    return ReplayResult(sweep_id, tuple(refs), tuple(i for i in wanted if i not in replayed_ids))

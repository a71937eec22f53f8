"""Settle by hand: a person marks `dead` or expired events `dismissed`, with the reason why.

A dead event spent its retry budget, or failed for good; an expired one is stuck by one of the
sweep's reasons but older than its window, so no sweep touches it again. Both raise the audit's
alarms (the sweep's checks, its report's ATTENTION line) until someone acts. When the cause was
settled elsewhere (the payment fixed with the provider, a test event, a duplicate), `dismiss`
records that: status `dismissed` (no effect on `payments`, never swept, never counted as dead,
stuck or expired), in one conditional UPDATE that takes only rows still dead or expired.

Every door dismisses through `dismiss_events`: the CLI (`dismiss EVENT_ID... --reason TEXT`) and
the Dagster job `dismiss_webhook_events`. A dismissal that settled anything is one `sweep_runs`
row (`kind = 'dismiss'`, the reason in `note`) with one `sweep_events` row per event (reason and
outcome `dismissed`); the ids it refused come back with why, and a dismissal that refused every
id writes no audit row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from . import store
from .models import (
    NOTE_LENGTH,
    EventState,
    SweepKind,
    SweepStatus,
    utcnow,
)
from .replay import ByHand, Refusal, refusals

DISMISSIBLE = "dead or expired stuck"


class DismissError(ValueError):
    """The dismissal was refused before anything was read or written (one line)."""


@dataclass(frozen=True)
class DismissResult:
    sweep_id: int | None  # None: every id was refused, nothing was written
    reason: str
    dismissed: tuple[EventState, ...]
    refused: tuple[Refusal, ...]


def clean_reason(reason: str) -> str:
    """The reason as kept in `sweep_runs.note`: required, one line, at most `NOTE_LENGTH`."""
    text = " ".join(reason.split())
    if not text:
        raise DismissError("a dismissal needs a reason: say why these events are settled")
    if len(text) > NOTE_LENGTH:
        raise DismissError(f"the reason is {len(text)} characters long; at most {NOTE_LENGTH}")
    return text


def dismiss_events(
    engine: Engine,
    event_ids: Sequence[int],
    reason: str,
    *,
    by: ByHand,
) -> DismissResult:
    """Mark the `dead` and expired events among `event_ids` `dismissed`, audited with `reason`."""
    note = clean_reason(reason)
    wanted = sorted(set(event_ids))
    if not wanted:
        raise DismissError("name at least one event id")
    now = utcnow()

    def work(conn: Connection) -> DismissResult:
        won = store.dismiss(conn, event_ids=wanted, expired_at=by.expired_at(now), now=now)
        refused = refusals(conn, wanted, won, accepts=DISMISSIBLE, verb="dismissed")
        if not won:
            return DismissResult(None, note, (), tuple(refused))
        settled = store.get_event_states(conn, event_ids=won)
        providers = {s.event.provider.value for s in settled}
        scope = providers.pop() if len(providers) == 1 else "all"
        sweep_id = by.audit(conn, SweepKind.DISMISS, won, now=now, provider=scope, note=note)
        # Nothing is dispatched: the audit row closes in the same transaction.
        store.finish_sweep_run(
            conn,
            sweep_id=sweep_id,
            finished_at=utcnow(),
            status=SweepStatus.SUCCEEDED,
            scanned=len(wanted),
            skipped=len(refused),
        )
        return DismissResult(sweep_id, note, tuple(settled), tuple(refused))

    return store.in_transaction(engine, work)

"""The database after the run, read once, as plain rows for the verifier.

Read at the end, when every child process has stopped: nothing moves any more, so the snapshot is
consistent without a repeatable-read transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store

from .database import PAYMENT_LOG


@dataclass(frozen=True)
class EventRow:
    id: int
    provider: str
    provider_event_id: str
    event_type: str
    status: str
    attempts: int


@dataclass(frozen=True)
class PaymentRow:
    id: int
    provider: str
    reference: str
    status: str
    amount: int | None
    last_event_id: int | None


@dataclass(frozen=True)
class LedgerRow:
    id: int
    event_id: int
    attempt: int
    provider: str
    reference: str
    from_status: str | None
    to_status: str


@dataclass(frozen=True)
class LogRow:
    """One committed change of a `payments` row, written by the soak's trigger."""

    id: int
    payment_id: int
    provider: str
    reference: str
    old_status: str | None
    new_status: str
    event_id: int | None


@dataclass(frozen=True)
class SweepEventRow:
    sweep_id: int
    event_id: int
    reason: str
    outcome: str


@dataclass(frozen=True)
class Snapshot:
    events: dict[tuple[str, str], EventRow]
    payments: dict[tuple[str, str], PaymentRow]
    ledger: list[LedgerRow]
    payment_log: list[LogRow]
    sweep_events: list[SweepEventRow]
    sweep_runs: dict[int, str]  # id -> status

    @property
    def events_by_id(self) -> dict[int, EventRow]:
        return {e.id: e for e in self.events.values()}


def take(engine: Engine) -> Snapshot:
    e, p, lg = store.webhook_events.c, store.payments.c, store.payment_ledger.c
    se, sr = store.sweep_events.c, store.sweep_runs.c
    with engine.connect() as conn:
        events = [
            EventRow(*r)
            for r in conn.execute(
                sa.select(e.id, e.provider, e.provider_event_id, e.event_type, e.status, e.attempts)
            )
        ]
        payments = [
            PaymentRow(*r)
            for r in conn.execute(
                sa.select(p.id, p.provider, p.reference, p.status, p.amount, p.last_event_id)
            )
        ]
        ledger = [
            LedgerRow(*r)
            for r in conn.execute(
                sa.select(
                    lg.id,
                    lg.webhook_event_id,
                    lg.attempt,
                    lg.provider,
                    lg.reference,
                    lg.from_status,
                    lg.to_status,
                ).order_by(lg.id)
            )
        ]
        log_rows = [
            LogRow(*r)
            for r in conn.execute(
                sa.text(
                    "SELECT id, payment_id, provider, reference, old_status, new_status, event_id "
                    f"FROM {PAYMENT_LOG} ORDER BY id"
                )
            )
        ]
        sweep_events = [
            SweepEventRow(*r)
            for r in conn.execute(sa.select(se.sweep_id, se.event_id, se.reason, se.outcome))
        ]
        sweep_runs = {int(i): str(s) for i, s in conn.execute(sa.select(sr.id, sr.status))}
    return Snapshot(
        events={(r.provider, r.provider_event_id): r for r in events},
        payments={(r.provider, r.reference): r for r in payments},
        ledger=ledger,
        payment_log=log_rows,
        sweep_events=sweep_events,
        sweep_runs=sweep_runs,
    )

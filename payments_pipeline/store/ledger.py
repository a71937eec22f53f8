"""Payments and their ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from ..models import Payment, PaymentFacts, PaymentStatus, Provider
from ._rows import from_row, payment_from_row
from .backends import backend_for
from .engine import changed_one
from .schema import payment_ledger, payments

# --- payments ------------------------------------------------------------------------------------

P = payments.c


# Read by every payment effect: built once, with bound parameters.
_GET_PAYMENT = sa.select(payments).where(
    P.provider == sa.bindparam("provider"), P.reference == sa.bindparam("reference")
)


def get_payment(conn: Connection, *, provider: Provider, reference: str) -> Payment | None:
    params = {"provider": provider.value, "reference": reference}
    row = conn.execute(_GET_PAYMENT, params).first()
    return payment_from_row(row) if row else None


def payments_by_reference(
    conn: Connection, *, provider: Provider, references: Sequence[str]
) -> list[Payment]:
    """The rows of these references (one query on the unique key; a page of a drift's listing)."""
    if not references:
        return []
    rows = conn.execute(
        sa.select(payments).where(P.provider == provider.value, P.reference.in_(list(references)))
    )
    return [payment_from_row(r) for r in rows]


def list_payments(conn: Connection) -> list[Payment]:
    return [payment_from_row(r) for r in conn.execute(sa.select(payments).order_by(P.id))]


def _written(facts: PaymentFacts, event_id: int, now: dt.datetime) -> dict[str, Any]:
    """The columns one applied event sets: the payment's facts after it, and who set them."""
    return {
        "status": facts.status.value,
        "amount": facts.amount,
        "amount_received": facts.amount_received,
        "amount_refunded": facts.amount_refunded,
        "currency": facts.currency,
        "livemode": facts.livemode,
        "last_event_id": event_id,
        "last_event_at": facts.last_event_at,
        "updated_at": now,
    }


def insert_payment_if_absent(
    conn: Connection,
    *,
    provider: Provider,
    reference: str,
    facts: PaymentFacts,
    event_id: int,
    now: dt.datetime,
) -> bool:
    """First event for a payment creates it; True when this call inserted."""
    return None is not backend_for(conn).insert_if_absent(
        conn,
        payments,
        {
            "provider": provider.value,
            "reference": reference,
            **_written(facts, event_id, now),
            "created_at": now,
        },
    )


def update_payment_if_unchanged(
    conn: Connection, *, seen: Payment, facts: PaymentFacts, event_id: int, now: dt.datetime
) -> bool:
    """Compare-and-set: apply only if the row still holds what the decision was made on (every
    applied event moves `last_event_id`, so that column and the status say it is unchanged)."""
    unchanged = sa.and_(
        P.id == seen.id,
        P.status == seen.status.value,
        P.last_event_id.is_(None)
        if seen.last_event_id is None
        else P.last_event_id == seen.last_event_id,
    )
    return changed_one(
        conn, sa.update(payments).where(unchanged).values(**_written(facts, event_id, now))
    )


@dataclass(frozen=True, slots=True)
class PaymentGroup:
    """The payments of one (livemode, provider, status, currency): how many, the sum received and
    the sum refunded (minor units). Provider and status as stored."""

    livemode: bool
    provider: str
    status: str
    currency: str | None
    count: int
    received: int
    refunded: int


def payment_totals(conn: Connection) -> list[PaymentGroup]:
    """Every (livemode, provider, status, currency) group of payments (the read side's
    live/test-mode split). One grouped scan of `payments`."""
    rows = conn.execute(
        sa.select(
            P.livemode,
            P.provider,
            P.status,
            P.currency,
            sa.func.count().label("count"),
            sa.func.coalesce(sa.func.sum(P.amount_received), 0).label("received"),
            sa.func.coalesce(sa.func.sum(P.amount_refunded), 0).label("refunded"),
        ).group_by(P.livemode, P.provider, P.status, P.currency)
    )
    return [
        from_row(PaymentGroup, r, livemode=bool, count=int, received=int, refunded=int)
        for r in rows
    ]


def insert_ledger_entry(
    conn: Connection,
    *,
    event_id: int,
    attempt: int,
    provider: Provider,
    reference: str,
    from_status: PaymentStatus | None,
    to_status: PaymentStatus,
    now: dt.datetime,
) -> None:
    """Record one applied effect; a second one for the same event violates the unique key."""
    conn.execute(
        _INSERT_LEDGER,
        {
            "webhook_event_id": event_id,
            "attempt": attempt,
            "provider": provider.value,
            "reference": reference,
            "from_status": from_status.value if from_status else None,
            "to_status": to_status.value,
            "applied_at": now,
        },
    )


_INSERT_LEDGER = sa.insert(payment_ledger)  # the values go in at execution


def ledger_has_event(conn: Connection, *, event_id: int) -> bool:
    row = conn.execute(
        sa.select(payment_ledger.c.id).where(payment_ledger.c.webhook_event_id == event_id)
    ).first()
    return row is not None

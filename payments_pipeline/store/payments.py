"""Payments and their ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from ..models import (
    Payment,
    PaymentStatus,
    Provider,
)
from .backends import backend_for
from .engine import changed_one
from .schema import payment_ledger, payments

# --- payments ------------------------------------------------------------------------------------

P = payments.c


def _payment_from_row(row: Any) -> Payment:
    return Payment(
        id=row.id,
        provider=Provider(row.provider),
        reference=row.reference,
        status=PaymentStatus(row.status),
        amount=row.amount,
        currency=row.currency,
        last_event_id=row.last_event_id,
        last_event_at=row.last_event_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def get_payment(conn: Connection, *, provider: Provider, reference: str) -> Payment | None:
    row = conn.execute(
        sa.select(payments).where(P.provider == provider.value, P.reference == reference)
    ).first()
    return _payment_from_row(row) if row else None


def list_payments(conn: Connection) -> list[Payment]:
    return [_payment_from_row(r) for r in conn.execute(sa.select(payments).order_by(P.id))]


def insert_payment_if_absent(
    conn: Connection,
    *,
    provider: Provider,
    reference: str,
    status: PaymentStatus,
    amount: int | None,
    currency: str | None,
    event_id: int,
    event_at: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """First event for a payment creates it; True when this call inserted."""
    return None is not backend_for(conn).insert_if_absent(
        conn,
        payments,
        {
            "provider": provider.value,
            "reference": reference,
            "status": status.value,
            "amount": amount,
            "currency": currency,
            "last_event_id": event_id,
            "last_event_at": event_at,
            "created_at": now,
            "updated_at": now,
        },
    )


def update_payment_if_unchanged(
    conn: Connection,
    *,
    seen: Payment,
    status: PaymentStatus,
    amount: int | None,
    currency: str | None,
    event_id: int,
    event_at: dt.datetime | None,
    now: dt.datetime,
) -> bool:
    """Compare-and-set: apply only if the row still holds what the decision was made on."""
    unchanged = sa.and_(
        P.id == seen.id,
        P.status == seen.status.value,
        P.last_event_id.is_(None)
        if seen.last_event_id is None
        else P.last_event_id == seen.last_event_id,
    )
    return changed_one(
        conn,
        sa.update(payments)
        .where(unchanged)
        .values(
            status=status.value,
            amount=seen.amount if amount is None else amount,
            currency=seen.currency if currency is None else currency,
            last_event_id=event_id,
            last_event_at=event_at,
            updated_at=now,
        ),
    )


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
        sa.insert(payment_ledger).values(
            webhook_event_id=event_id,
            attempt=attempt,
            provider=provider.value,
            reference=reference,
            from_status=from_status.value if from_status else None,
            to_status=to_status.value,
            applied_at=now,
        )
    )


def ledger_has_event(conn: Connection, *, event_id: int) -> bool:
    row = conn.execute(
        sa.select(payment_ledger.c.id).where(payment_ledger.c.webhook_event_id == event_id)
    ).first()
    return row is not None

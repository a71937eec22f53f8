"""Payments learn what was received and refunded, and whether it was real money.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

`payments` gains `amount_received`, `amount_refunded` and `livemode`; `status` (and the ledger's
status columns) widen to hold `partially_refunded`. Existing rows are upgraded in place:

- `amount_received`: the stored `amount` for payments that succeeded or were refunded (before
  this revision the amount stored was what the provider reported paid), NULL otherwise;
- `amount_refunded`: the `amount` of a refunded payment (a refund was only recorded when whole),
  0 otherwise;
- `livemode`: read from the payment's last applied event: false for a Stripe event with
  `livemode: false` and a Monetbil notification with a test status (7, 8, 9); true otherwise.

Like 0001, the DDL is written out, and the payload reading is inlined (no import of the
providers' code), so the revision stays a frozen record.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 1000
_MONETBIL_TEST_STATUSES = {"7", "8", "9"}


def _live(provider: str, payload: str | None) -> bool:
    """Whether a stored event was real money; unreadable payloads count as live (as before)."""
    if not payload:
        return True
    try:
        if provider == "stripe":
            return json.loads(payload).get("livemode", True) is not False
        if provider == "monetbil":
            return dict(parse_qsl(payload)).get("status") not in _MONETBIL_TEST_STATUSES
    except (ValueError, AttributeError):
        return True
    return True


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.alter_column(
            "status", type_=sa.String(32), existing_type=sa.String(16), existing_nullable=False
        )
        batch.add_column(sa.Column("amount_received", sa.BigInteger))
        batch.add_column(
            sa.Column("amount_refunded", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("livemode", sa.Boolean, nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("payment_ledger") as batch:
        batch.alter_column("from_status", type_=sa.String(32), existing_type=sa.String(16))
        batch.alter_column(
            "to_status", type_=sa.String(32), existing_type=sa.String(16), existing_nullable=False
        )

    payments = sa.table(
        "payments",
        sa.column("id", sa.BigInteger),
        sa.column("provider", sa.String),
        sa.column("status", sa.String),
        sa.column("amount", sa.BigInteger),
        sa.column("amount_received", sa.BigInteger),
        sa.column("amount_refunded", sa.BigInteger),
        sa.column("livemode", sa.Boolean),
        sa.column("last_event_id", sa.BigInteger),
    )
    events = sa.table("webhook_events", sa.column("id", sa.BigInteger), sa.column("payload"))
    p = payments.c
    op.execute(
        payments.update()
        .where(p.status.in_(("succeeded", "refunded")))
        .values(amount_received=p.amount)
    )
    op.execute(
        payments.update()
        .where(p.status == "refunded", p.amount.is_not(None))
        .values(amount_refunded=p.amount)
    )
    conn = op.get_bind()
    after = 0
    while True:  # livemode, in batches by id: a payments table may be large
        rows = conn.execute(
            sa.select(p.id, p.provider, events.c.payload)
            .select_from(payments.outerjoin(events, events.c.id == p.last_event_id))
            .where(p.id > after)
            .order_by(p.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        test_ids = [r.id for r in rows if not _live(r.provider, r.payload)]
        if test_ids:
            conn.execute(payments.update().where(p.id.in_(test_ids)).values(livemode=False))
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("payment_ledger") as batch:
        batch.alter_column(
            "to_status", type_=sa.String(16), existing_type=sa.String(32), existing_nullable=False
        )
        batch.alter_column("from_status", type_=sa.String(16), existing_type=sa.String(32))
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("livemode")
        batch.drop_column("amount_refunded")
        batch.drop_column("amount_received")
        batch.alter_column(
            "status", type_=sa.String(16), existing_type=sa.String(32), existing_nullable=False
        )

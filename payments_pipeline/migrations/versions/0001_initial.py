"""Initial schema: webhook_events, payments, payment_ledger, sweep_runs, sweep_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

The DDL is written out rather than taken from `store.metadata`: a migration is a frozen record of
what the schema was at this revision. A test checks that head matches `store.metadata`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYLOAD = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts_base", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dispatched_at", TS),
        sa.Column("processing_started_at", TS),
        sa.Column("processed_at", TS),
        sa.Column("next_attempt_at", TS),
        sa.Column("last_error", sa.String(500)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint(
            "provider", "provider_event_id", name="uq_webhook_events_provider_event"
        ),
    )
    op.create_index(
        "ix_webhook_events_status_dispatched_at", "webhook_events", ["status", "dispatched_at"]
    )
    op.create_index(
        "ix_webhook_events_status_processing_started_at",
        "webhook_events",
        ["status", "processing_started_at"],
    )
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])

    op.create_table(
        "payments",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.String(8)),
        sa.Column("last_event_id", ID),
        sa.Column("last_event_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("provider", "reference", name="uq_payments_provider_reference"),
    )

    op.create_table(
        "payment_ledger",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("webhook_event_id", ID, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("applied_at", TS, nullable=False),
        sa.UniqueConstraint("webhook_event_id", name="uq_payment_ledger_event"),
    )

    op.create_table(
        "sweep_runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("dagster_run_id", sa.String(64)),
        sa.Column("minutes", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("scanned", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dispatched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(500)),
    )
    op.create_index("ix_sweep_runs_started_at", "sweep_runs", ["started_at"])

    op.create_table(
        "sweep_events",
        sa.Column("sweep_id", ID, sa.ForeignKey("sweep_runs.id"), primary_key=True),
        sa.Column("event_id", ID, primary_key=True, autoincrement=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_sweep_events_event_id", "sweep_events", ["event_id"])


def downgrade() -> None:
    op.drop_table("sweep_events")
    op.drop_table("sweep_runs")
    op.drop_table("payment_ledger")
    op.drop_table("payments")
    op.drop_table("webhook_events")

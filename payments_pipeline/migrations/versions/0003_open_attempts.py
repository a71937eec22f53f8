"""A waiting event says it may start an attempt by a cleared `processing_started_at`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Until this revision an attempt could start on a `received` or `failed` event when
`processing_started_at IS NULL OR processing_started_at < dispatched_at`: two timestamps from
different clock readings, which a worker descheduled between reading its clock and claiming could
leave in that order after its own attempt, so a failed event was retried at once without a new
dispatch. From now on every claim that hands a waiting event on clears `processing_started_at` and
an attempt may start only when it is NULL. The events handed on but not yet started when this
revision runs (the old rule's queue) are given the new form here, so none waits for the sweep.
No schema change. The downgrade changes nothing: under the old rule a cleared start also admits an
attempt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    events = sa.table(
        "webhook_events",
        sa.column("status", sa.String),
        sa.column("dispatched_at", sa.DateTime),
        sa.column("processing_started_at", sa.DateTime),
    )
    op.execute(
        events.update()
        .where(
            events.c.status.in_(("received", "failed")),
            events.c.processing_started_at.is_not(None),
            events.c.processing_started_at < events.c.dispatched_at,
        )
        .values(processing_started_at=None)
    )


def downgrade() -> None:
    pass

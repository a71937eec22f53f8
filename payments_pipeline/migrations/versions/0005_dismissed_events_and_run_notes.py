"""Events can be settled by hand (`dismissed`); an audit row keeps why a person ran it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

- `sweep_runs.note`: the reason a person gave for a dismissal (`payments-pipeline dismiss
  --reason`, the job `dismiss_webhook_events`); NULL for every other run, existing rows included.
- `webhook_events.status` takes the new status `dismissed`: `String(16)` holds it and no
  constraint lists the statuses, so it needs no DDL; the status-led indexes serve it as they serve
  the others. A downgrade turns dismissed events into `dead`, the nearest status the older code
  knows (it never retries them either).

The DDL is written out (no import of the package's schema), so the revision stays a frozen record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sweep_runs") as batch:
        batch.add_column(sa.Column("note", sa.String(500)))


def downgrade() -> None:
    events = sa.table("webhook_events", sa.column("status", sa.String))
    op.execute(events.update().where(events.c.status == "dismissed").values(status="dead"))
    with op.batch_alter_table("sweep_runs") as batch:
        batch.drop_column("note")

"""Events say how they reached us; audit rows say what they were and which window they listed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

- `webhook_events.received_via`: `webhook` (a delivery to the receiver) or `api` (fetched from the
  provider by a reconciliation). Every existing row was a delivery: `webhook`.
- `sweep_runs.kind`: `sweep`, `replay`, `dismiss` or `reconcile`; `window_start`/`window_end`: the
  `created` window a reconciliation listed (NULL for the other kinds). Existing rows are sweeps,
  except the replays, told apart by their `replay` audit rows: they get `kind = 'replay'`. (A
  replay that replayed nothing left no audit row and stays `sweep`: nothing tells it apart.)

The DDL is written out (no import of the package's schema), so the revision stays a frozen record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(
            sa.Column("received_via", sa.String(8), nullable=False, server_default="webhook")
        )
    with op.batch_alter_table("sweep_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="sweep"))
        batch.add_column(sa.Column("window_start", _TS))
        batch.add_column(sa.Column("window_end", _TS))
    runs = sa.table("sweep_runs", sa.column("id", sa.BigInteger), sa.column("kind", sa.String))
    audited = sa.table(
        "sweep_events", sa.column("sweep_id", sa.BigInteger), sa.column("reason", sa.String)
    )
    replays = sa.select(audited.c.sweep_id).where(audited.c.reason == "replay")
    op.execute(runs.update().where(runs.c.id.in_(replays)).values(kind="replay"))


def downgrade() -> None:
    with op.batch_alter_table("sweep_runs") as batch:
        batch.drop_column("window_end")
        batch.drop_column("window_start")
        batch.drop_column("kind")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("received_via")

"""Tables, column types and the metadata of the product's database."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import SchemaItem

from ..models import KEY_LENGTH, NOTE_LENGTH

metadata = sa.MetaData()

TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYLOAD = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _table(name: str, *items: SchemaItem) -> sa.Table:
    """A table of `metadata` whose rows are keyed by a surrogate `id`."""
    return sa.Table(
        name, metadata, sa.Column("id", ID, primary_key=True, autoincrement=True), *items
    )


def _provider() -> sa.Column[str]:
    return sa.Column("provider", sa.String(32), nullable=False)


def _key(name: str) -> sa.Column[str]:
    """A provider's identifier or name (`KEY_LENGTH`)."""
    return sa.Column(name, sa.String(KEY_LENGTH), nullable=False)


webhook_events = _table(
    "webhook_events",
    _provider(),
    _key("provider_event_id"),
    _key("event_type"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", PAYLOAD, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # attempts at the last replay: the retry budget is `attempts - attempts_base`, so `attempts`
    # (the fencing token) never goes down and a stale worker can never match a later attempt.
    sa.Column("attempts_base", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched_at", TS),
    sa.Column("processing_started_at", TS),
    sa.Column("processed_at", TS),
    sa.Column("next_attempt_at", TS),
    sa.Column("last_error", sa.String(500)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # `webhook`: a delivery to the receiver; `api`: fetched from the provider by a reconciliation.
    sa.Column("received_via", sa.String(8), nullable=False, server_default="webhook"),
    sa.UniqueConstraint("provider", "provider_event_id", name="uq_webhook_events_provider_event"),
    sa.Index("ix_webhook_events_status_dispatched_at", "status", "dispatched_at"),
    sa.Index("ix_webhook_events_status_processing_started_at", "status", "processing_started_at"),
    sa.Index("ix_webhook_events_created_at", "created_at"),
)

payments = _table(
    "payments",
    _provider(),
    _key("reference"),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("amount", sa.BigInteger),  # minor units: what the payment is for
    sa.Column("currency", sa.String(8)),
    sa.Column("last_event_id", ID),
    sa.Column("last_event_at", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("amount_received", sa.BigInteger),  # what was captured or paid
    sa.Column("amount_refunded", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("livemode", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.UniqueConstraint("provider", "reference", name="uq_payments_provider_reference"),
)

# One row per effect applied to `payments`; the unique event id makes a second application of the
# same event impossible even if every other guard failed, and gives the soak its proof.
payment_ledger = _table(
    "payment_ledger",
    sa.Column("webhook_event_id", ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    _provider(),
    _key("reference"),
    sa.Column("from_status", sa.String(32)),
    sa.Column("to_status", sa.String(32), nullable=False),
    sa.Column("applied_at", TS, nullable=False),
    sa.UniqueConstraint("webhook_event_id", name="uq_payment_ledger_event"),
)

sweep_runs = _table(
    "sweep_runs",
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("minutes", sa.Integer, nullable=False),
    _provider(),
    sa.Column("scanned", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.String(500)),
    # What the run was (`models.SweepKind`); a reconciliation's listed window (NULL otherwise).
    sa.Column("kind", sa.String(16), nullable=False, server_default="sweep"),
    sa.Column("window_start", TS),
    sa.Column("window_end", TS),
    # Why a person ran it: a dismissal's reason (NULL for the other kinds).
    sa.Column("note", sa.String(NOTE_LENGTH)),
    sa.Index("ix_sweep_runs_started_at", "started_at"),
)

# One row per event a sweep (or replay) touched. Keyed by (sweep_id, event_id): a sweep sees an
# event once, and a surrogate id would be one more index to write per audited event.
sweep_events = sa.Table(
    "sweep_events",
    metadata,
    sa.Column("sweep_id", ID, sa.ForeignKey("sweep_runs.id"), primary_key=True),
    sa.Column("event_id", ID, primary_key=True, autoincrement=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Index("ix_sweep_events_event_id", "event_id"),
)

E = webhook_events.c

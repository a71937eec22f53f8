"""Alembic environment: always handed a live connection by `payments_pipeline.migrations`."""

from __future__ import annotations

from alembic import context

from payments_pipeline.store import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `payments-pipeline db upgrade`")

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()

"""The migration creates exactly what `store.metadata` describes, on every backend."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from payments_pipeline import migrations, store
from payments_pipeline.models import Provider

from .conftest import EventFactory
from .helpers import fetch_event


def test_head_matches_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, store.metadata)
    assert diff == []
    assert migrations.current_revision(engine) == migrations.head_revision() == "0001"


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    migrations.upgrade(engine)
    assert migrations.current_revision(engine) == "0001"


def test_timestamps_keep_microseconds(engine: Engine, event_factory: EventFactory) -> None:
    moment = dt.datetime(2026, 11, 23, 12, 34, 56, 789012)
    event_id = event_factory(Provider.STRIPE, dispatched_at=moment)
    assert fetch_event(engine, event_id).dispatched_at == moment

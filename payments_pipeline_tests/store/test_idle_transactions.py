"""A session hung inside a transaction is ended by the server, releasing its row locks.

A worker frozen mid-handler holds the locks of the effect it wrote; the sweep's attempt at the same
event (reclaimed after the processing timeout) would wait on them without end on PostgreSQL. With
`make_engine(idle_in_transaction_timeout=...)` the server rolls the hung transaction back instead
(docs/RELIABILITY.md, findings). Real servers only: SQLite has no such setting and no server.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from payments_pipeline import store

from ..conftest import EventFactory

pytestmark = pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)

E = store.webhook_events


def _hold(conn: Connection, event_id: int) -> None:
    """Begin a transaction that writes (and so locks) the event's row, and leave it open."""
    conn.begin()
    conn.execute(sa.update(E).where(E.c.id == event_id).values(last_error="held"))


def _update_waiting_at_most(engine: Engine, event_id: int, seconds: int) -> float:
    """Update the same row, waiting at most `seconds` for its lock; how long it took."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET lock_timeout = '{seconds}s'")
        else:
            conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
        conn.commit()  # a session setting: it outlives this (auto-begun) transaction
        try:
            started = time.monotonic()
            with conn.begin():
                conn.execute(sa.update(E).where(E.c.id == event_id).values(last_error="waiter"))
            return time.monotonic() - started
        finally:
            conn.invalidate()  # the session settings above stay out of the pool


def test_a_hung_transaction_is_ended_and_its_locks_released(
    engine: Engine, event_factory: EventFactory
) -> None:
    event_id = event_factory()
    url = engine.url.render_as_string(hide_password=False)
    holder = store.make_engine(
        url, idle_in_transaction_timeout=dt.timedelta(seconds=1), pool_pre_ping=False
    )
    try:
        with holder.connect() as hung:
            _hold(hung, event_id)
            time.sleep(3)  # frozen mid-handler, past the timeout
            assert _update_waiting_at_most(engine, event_id, 10) < 2  # no lock left to wait on
            with pytest.raises(sa.exc.DBAPIError):  # the server ended the hung session
                hung.execute(sa.select(E.c.id).where(E.c.id == event_id))
    finally:
        holder.dispose()
    with engine.connect() as conn:  # the hung write was rolled back, the waiter's committed
        last_error = conn.execute(sa.select(E.c.last_error).where(E.c.id == event_id)).scalar()
    assert last_error == "waiter"


def test_without_the_timeout_the_lock_is_held(engine: Engine, event_factory: EventFactory) -> None:
    # The control: the same hung transaction on an engine without the setting keeps its lock.
    event_id = event_factory()
    url = engine.url.render_as_string(hide_password=False)
    holder = store.make_engine(url, pool_pre_ping=False)
    try:
        with holder.connect() as hung:
            _hold(hung, event_id)
            time.sleep(1.5)
            with pytest.raises(sa.exc.OperationalError):  # lock wait timeout (55P03 / 1205)
                _update_waiting_at_most(engine, event_id, 1)
            hung.rollback()
    finally:
        holder.dispose()

"""MySQL and MariaDB (InnoDB): no INSERT ... ON CONFLICT, no UPDATE ... RETURNING, READ
COMMITTED, and MariaDB's idle-transaction timeout. The audit insert is `Basic`'s executemany."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from ..schema import E, webhook_events
from .base import Basic, Ids, Values, Where, first_matching

DUPLICATE_KEY = 1062  # ER_DUP_ENTRY


class MySQL(Basic):
    name = "mysql"

    def engine_options(self, kwargs: dict[str, Any]) -> None:
        # Range conditions then take no gap locks.
        kwargs.setdefault("isolation_level", "READ COMMITTED")

    def idle_timeout_statement(self, dbapi_connection: Any, seconds: int) -> str | None:
        if "MariaDB" in str(getattr(dbapi_connection, "get_server_info", str)()):
            return f"SET SESSION idle_transaction_timeout = {seconds}"
        return None  # MySQL proper has no such variable

    def insert_if_absent_statement(self, table: sa.Table) -> Any:
        return _plain_insert(table)

    def insert_if_absent(
        self, conn: Connection, table: sa.Table, values: dict[str, Any]
    ) -> int | None:
        """A plain INSERT whose duplicate-key error (1062) is caught: InnoDB rolls back only that
        statement. (ON DUPLICATE KEY UPDATE cannot be used: with CLIENT_FOUND_ROWS, which
        SQLAlchemy always sets, a no-op duplicate reports 1 row like an insert; INSERT IGNORE
        would also swallow data errors.)"""
        try:
            result = conn.execute(self.insert_if_absent_statement(table), values)
        except sa.exc.IntegrityError as exc:
            if getattr(exc.orig, "args", (None,))[0] == DUPLICATE_KEY:
                return None
            raise
        return int(result.lastrowid)

    def update_ids_returning(
        self, conn: Connection, ids: Ids, where: Where, values: Values
    ) -> list[int]:
        """MariaDB has no UPDATE ... RETURNING and refuses a subquery on the updated table: lock
        the matching rows first (SKIP LOCKED), then update exactly those, still repeating the
        condition.

        Through the primary key only: through a secondary index InnoDB also locks, for a moment,
        rows it then filters out, and a concurrent sweep's SKIP LOCKED would skip rows that
        nobody claims (seen in test_four_concurrent_sweeps_dispatch_each_event_once).
        """
        locked = _lock_ids(conn, ids, where)
        if locked:
            conn.execute(sa.update(webhook_events).where(E.id.in_(locked), where).values(**values))
        return sorted(locked)

    def claim_ids(self, conn: Connection, ids: Ids, where: Where, values: Values) -> list[Any]:
        """`update_ids_returning`'s lock then update, then the claimed rows read back (still
        locked by this transaction, so as the update left them)."""
        locked = _lock_ids(conn, ids, where)
        if not locked:
            return []
        conn.execute(sa.update(webhook_events).where(E.id.in_(locked), where).values(**values))
        return list(conn.execute(sa.select(webhook_events).where(E.id.in_(locked))))

    def update_one_returning(
        self, conn: Connection, event_id: int, where: Where, values: Values
    ) -> Any | None:
        """No RETURNING: the UPDATE, then the row read back under the lock it took (two round
        trips; the row count says whether there is anything to read)."""
        changed = conn.execute(
            sa.update(webhook_events).where(E.id == event_id, where).values(**values)
        )
        if changed.rowcount != 1:
            return None
        return conn.execute(sa.select(webhook_events).where(E.id == event_id)).first()

    def claim_batch(self, conn: Connection, where: Where, values: Values, limit: int) -> list[Any]:
        """Lock up to `limit` matching rows (SKIP LOCKED), update exactly those, then read them
        back: no UPDATE ... RETURNING here, and no subquery on the updated table. The lock goes
        through the (status, dispatched_at) index (a scan by primary key would read the whole
        table); InnoDB may then hold, for a moment, rows it filters out, so a concurrent worker
        can take fewer rows than it asked for: they stay dispatched for its next poll, never
        lost and never taken twice."""
        lock = first_matching(where, limit).with_for_update(skip_locked=True)
        locked = list(conn.execute(lock).scalars())
        if not locked:
            return []
        conn.execute(sa.update(webhook_events).where(E.id.in_(locked), where).values(**values))
        return list(conn.execute(sa.select(webhook_events).where(E.id.in_(locked))))


def _lock_ids(conn: Connection, ids: Ids, where: Where) -> list[int]:
    """Lock the rows among `ids` that match `where` and no other transaction holds (SKIP
    LOCKED), through the primary key (see `MySQL.update_ids_returning`); their ids."""
    lock = (
        sa.select(E.id)
        .where(E.id.in_(ids), where)
        .with_for_update(skip_locked=True)
        .with_hint(webhook_events, "FORCE INDEX (PRIMARY)", "mysql")
        .with_hint(webhook_events, "FORCE INDEX (PRIMARY)", "mariadb")
    )
    return list(conn.execute(lock).scalars())


@functools.cache
def _plain_insert(table: sa.Table) -> Any:
    """Built once per table, like `Basic`'s INSERT: the values go in at execution."""
    return sa.insert(table)

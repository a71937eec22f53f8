"""What every database does alike unless its backend module says otherwise."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, Engine, event

from ...models import SweepOutcome
from ..schema import E, sweep_events, webhook_events

# The set-based claim's arguments: event ids, the condition they must still match, the new values.
Ids = Sequence[int]
Where = ColumnElement[bool]
Values = dict[str, Any]


class Basic:
    """Standard SQL: INSERT ... ON CONFLICT DO NOTHING RETURNING, UPDATE ... RETURNING, an
    executemany audit, and no session settings. A subclass names its dialect's INSERT construct
    (the one that has `on_conflict_do_nothing`) and overrides what its database does otherwise."""

    name: str
    dialect_insert: Callable[..., Any]

    # --- engine set-up ---

    def engine_options(self, kwargs: dict[str, Any]) -> None:
        """Set this database's defaults in the `create_engine` keyword arguments."""

    def configure(
        self,
        engine: Engine,
        *,
        idle_in_transaction_timeout: dt.timedelta | None,
        serial: bool = False,
    ) -> None:
        """Install the connection set-up on a new engine: `session_statements` on each new
        connection, and `begin_statement` to open each transaction.

        `idle_in_transaction_timeout`: the server ends a session left idle inside a transaction
        that long, rolling it back (`make_engine`); set where the server has such a setting
        (`idle_timeout_statement`). `serial`: no parallel query plans, where the server makes
        them (`serial_statement`)."""
        seconds = None
        if idle_in_transaction_timeout is not None:
            seconds = max(1, int(idle_in_transaction_timeout.total_seconds()))

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            statements = self.session_statements(dbapi_connection, engine.url, seconds, serial)
            if not statements:
                return
            cursor = dbapi_connection.cursor()
            for sql in statements:
                cursor.execute(sql)
            cursor.close()
            dbapi_connection.commit()  # end the transaction the driver may have opened for the SET

        begin = self.begin_statement()
        if begin is not None:

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                conn.exec_driver_sql(begin)

    def session_statements(
        self, dbapi_connection: Any, url: sa.URL, idle_seconds: int | None, serial: bool
    ) -> list[str]:
        """What a new connection runs first: the idle-transaction timeout and the serial plans
        where asked for and where the server has them."""
        statements: list[str | None] = []
        if idle_seconds is not None:
            statements.append(self.idle_timeout_statement(dbapi_connection, idle_seconds))
        if serial:
            statements.append(self.serial_statement())
        return [sql for sql in statements if sql]

    def begin_statement(self) -> str | None:
        """What opens a transaction in place of the driver's own BEGIN; None: the driver's."""
        return None

    def idle_timeout_statement(self, dbapi_connection: Any, seconds: int) -> str | None:
        """The session setting that ends idle transactions after `seconds`; None: there is none."""
        return None

    def serial_statement(self) -> str | None:
        """The session setting that turns parallel plans off; None: the server makes none."""
        return None

    def unflushed_commit_statement(self) -> str | None:
        """The statement that lets this transaction's commit return before the log is flushed;
        None: the database has no such setting per transaction (MySQL's is server-wide, SQLite's
        per connection)."""
        return None

    # --- insert-if-absent ---

    def insert_if_absent_statement(self, table: sa.Table) -> Any:
        """The INSERT `insert_if_absent` runs, built once per table (values go in at execution)."""
        return _on_conflict_do_nothing(type(self).dialect_insert, table)

    def insert_if_absent(
        self, conn: Connection, table: sa.Table, values: dict[str, Any]
    ) -> int | None:
        """INSERT unless a unique key already exists; the new id, or None (never read, then
        insert)."""
        return conn.execute(self.insert_if_absent_statement(table), values).scalar()

    # --- the set-based claim ---

    def update_ids_returning(
        self, conn: Connection, ids: Ids, where: Where, values: Values
    ) -> list[int]:
        """UPDATE the events among `ids` that still match `where` and that no concurrent
        transaction holds; the ids updated, sorted. The set-based claim."""
        result = conn.execute(
            sa.update(webhook_events)
            .where(self.claimable(ids, where), where)
            .values(**values)
            .returning(E.id)
        )
        return sorted(result.scalars())

    def claimable(self, ids: Ids, where: Where) -> Where:
        """Which of `ids` the claim's UPDATE may take: all of them (no row locks to skip)."""
        return E.id.in_(ids)

    def claim_ids(self, conn: Connection, ids: Ids, where: Where, values: Values) -> list[Any]:
        """`update_ids_returning`'s claim, returning each claimed row whole (every column)."""
        return list(
            conn.execute(
                sa.update(webhook_events)
                .where(self.claimable(ids, where), where)
                .values(**values)
                .returning(*webhook_events.c)
            )
        )

    def update_one_returning(
        self, conn: Connection, event_id: int, where: Where, values: Values
    ) -> Any | None:
        """UPDATE the one event if it matches `where` (waiting on a transaction that holds it,
        then re-checking); its row as the update left it, or None. One statement."""
        return conn.execute(
            sa.update(webhook_events)
            .where(E.id == event_id, where)
            .values(**values)
            .returning(*webhook_events.c)
        ).first()

    def claim_batch(self, conn: Connection, where: Where, values: Values, limit: int) -> list[Any]:
        """Up to `limit` rows matching `where` (one status), oldest `dispatched_at` first: the
        order of the (status, dispatched_at) index, so no sort and no scan past the rows taken."""
        picked = self.batch_claimable(where, limit)
        return list(
            conn.execute(
                sa.update(webhook_events)
                .where(picked, where)
                .values(**values)
                .returning(*webhook_events.c)
            )
        )

    def batch_claimable(self, where: Where, limit: int) -> Where:
        """Which rows the batch claim's UPDATE may take: the first `limit` that match."""
        return E.id.in_(first_matching(where, limit).scalar_subquery())

    # --- the audit ---

    def insert_sweep_events(
        self, conn: Connection, *, sweep_id: int, rows: Sequence[tuple[int, str, SweepOutcome]]
    ) -> None:
        """Write the audit rows (event id, reason, outcome) of one sweep, one statement a batch."""
        # PyMySQL folds an executemany INSERT into multi-row VALUES; SQLite runs it in-process.
        conn.execute(
            sa.insert(sweep_events),
            [
                {"sweep_id": sweep_id, "event_id": i, "reason": str(r), "outcome": o.value}
                for i, r, o in rows
            ],
        )


def first_matching(where: Where, limit: int) -> sa.Select[tuple[int]]:
    """The ids of the first `limit` rows matching `where`, oldest `dispatched_at` first (the
    batch claims' pick)."""
    return sa.select(E.id).where(where).order_by(E.dispatched_at).limit(limit)


@functools.cache
def _on_conflict_do_nothing(dialect_insert: Callable[[sa.Table], Any], table: sa.Table) -> Any:
    """Built once per backend and table: the values go in as execution parameters, so a delivery
    does not rebuild and re-key an INSERT (the receiver's hot path; docs/PERFORMANCE.md, receiver
    section)."""
    # RETURNING rather than rowcount: with implicit RETURNING the drivers' rowcounts differ.
    return dialect_insert(table).on_conflict_do_nothing().returning(table.c.id)

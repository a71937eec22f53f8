"""What differs by database: one module per database behind the small `Backend` protocol.

`base.Basic` holds what the databases share (standard SQL: INSERT ... ON CONFLICT DO NOTHING
RETURNING, UPDATE ... RETURNING, an executemany audit, no session settings); each database's
module subclasses it and overrides only what that database does differently, with its reason
(`sqlite`, `postgresql`, `mysql` for MySQL and MariaDB). The rest of the store asks
`backend_for(conn)` and never looks at a dialect name itself.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from ...models import SweepOutcome
from .base import Ids, Values, Where
from .mysql import MySQL
from .postgresql import PostgreSQL
from .sqlite import SQLite


class Backend(Protocol):
    """The statements and settings that differ by database."""

    name: str

    def engine_options(self, kwargs: dict[str, Any]) -> None:
        """Set this database's defaults in the `create_engine` keyword arguments."""

    def configure(
        self,
        engine: Engine,
        *,
        idle_in_transaction_timeout: dt.timedelta | None,
        serial: bool = False,
    ) -> None:
        """Install the connection set-up on a new engine (session settings, BEGIN); `serial`: no
        parallel plans."""

    def unflushed_commit_statement(self) -> str | None:
        """The statement that lets one transaction commit without waiting for the log flush
        (a processing claim, `in_transaction(flush=False)`); None where there is none."""

    def insert_if_absent_statement(self, table: sa.Table) -> Any:
        """The INSERT `insert_if_absent` runs, built once per table (values go in at execution)."""

    def insert_if_absent(
        self, conn: Connection, table: sa.Table, values: dict[str, Any]
    ) -> int | None:
        """INSERT unless a unique key already exists; the new id, or None (never read, then
        insert)."""

    def update_ids_returning(
        self, conn: Connection, ids: Ids, where: Where, values: Values
    ) -> list[int]:
        """UPDATE the events among `ids` that still match `where` and that no concurrent
        transaction holds; the ids updated, sorted. The set-based claim."""

    def insert_sweep_events(
        self, conn: Connection, *, sweep_id: int, rows: Sequence[tuple[int, str, SweepOutcome]]
    ) -> None:
        """Write the audit rows (event id, reason, outcome) of one sweep, one statement a batch."""

    def claim_ids(self, conn: Connection, ids: Ids, where: Where, values: Values) -> list[Any]:
        """`update_ids_returning`'s claim (rows held elsewhere skipped), returning each claimed
        row whole: a Celery message's ids starting their attempts."""

    def update_one_returning(
        self, conn: Connection, event_id: int, where: Where, values: Values
    ) -> Any | None:
        """UPDATE one event if it still matches `where`; its row as updated, or None. One
        statement where the database has UPDATE ... RETURNING."""

    def claim_batch(self, conn: Connection, where: Where, values: Values, limit: int) -> list[Any]:
        """UPDATE up to `limit` events that match `where` and that no concurrent transaction
        holds; their rows as the update left them (every column). The table worker's claim."""


_BACKENDS: dict[str, type[Backend]] = {
    "sqlite": SQLite,
    "postgresql": PostgreSQL,
    "mysql": MySQL,
    "mariadb": MySQL,
}
SUPPORTED = frozenset(_BACKENDS)


def backend_for(conn_or_dialect_name: Connection | Engine | str) -> Backend:
    """The backend of a connection, an engine or a dialect name (`sa.URL.get_backend_name()`)."""
    if isinstance(conn_or_dialect_name, str):
        return _backend_named(conn_or_dialect_name)
    return _backend_named(conn_or_dialect_name.dialect.name)


@functools.cache
def _backend_named(name: str) -> Backend:
    if name not in _BACKENDS:
        raise NotImplementedError(f"unsupported database backend {name!r}")
    return _BACKENDS[name]()

"""SQLite: one writer at a time, so every transaction starts with BEGIN IMMEDIATE.

The claim is `Basic`'s UPDATE ... RETURNING as it stands: SQLite has no row locks (and no
FOR UPDATE); BEGIN IMMEDIATE already serialises its writers, so there is no held row to skip.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.dialects import sqlite

from .base import Basic


class SQLite(Basic):
    name = "sqlite"
    dialect_insert = staticmethod(sqlite.insert)

    def engine_options(self, kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 60)

    def configure(
        self,
        engine: Engine,
        *,
        idle_in_transaction_timeout: dt.timedelta | None,
        serial: bool = False,
    ) -> None:
        """WAL, a busy timeout, and `BEGIN IMMEDIATE` so a transaction takes the write lock before
        it reads (two deferred transactions that both read then write would deadlock with
        "database is locked"). No idle-transaction timeout: SQLite has no such setting, one
        writer, and no server to hang on; and no parallel plans to turn off."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            if engine.url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

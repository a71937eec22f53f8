"""SQLite: one writer at a time, so every transaction starts with BEGIN IMMEDIATE.

The claim is `Basic`'s UPDATE ... RETURNING as it stands: SQLite has no row locks (and no
FOR UPDATE); BEGIN IMMEDIATE already serialises its writers, so there is no held row to skip.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from .base import Basic


class SQLite(Basic):
    name = "sqlite"
    dialect_insert = staticmethod(sqlite.insert)

    def engine_options(self, kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 60)

    def session_statements(
        self, dbapi_connection: Any, url: sa.URL, idle_seconds: int | None, serial: bool
    ) -> list[str]:
        """WAL and a busy timeout. No idle-transaction timeout: SQLite has no such setting, one
        writer, and no server to hang on; and no parallel plans to turn off."""
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (`begin_statement`)
        wal = [] if url.database in (None, "", ":memory:") else ["PRAGMA journal_mode=WAL"]
        return [*wal, "PRAGMA busy_timeout=60000", "PRAGMA foreign_keys=ON"]

    def begin_statement(self) -> str | None:
        """A transaction takes the write lock before it reads: two deferred transactions that
        both read then write would deadlock with "database is locked"."""
        return "BEGIN IMMEDIATE"

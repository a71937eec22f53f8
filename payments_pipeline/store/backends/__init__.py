"""What differs by database: one module per database, each a `Backend` (`base.Basic`).

`base.Basic` holds what the databases share (standard SQL: INSERT ... ON CONFLICT DO NOTHING
RETURNING, UPDATE ... RETURNING, an executemany audit, no session settings); each database's
module subclasses it and overrides only what that database does differently, with its reason
(`sqlite`, `postgresql`, `mysql` for MySQL and MariaDB). The rest of the store asks
`backend_for(conn)` and never looks at a dialect name itself.
"""

from __future__ import annotations

import functools

from sqlalchemy import Connection, Engine

from .base import Basic
from .mysql import MySQL
from .postgresql import PostgreSQL
from .sqlite import SQLite

# Every backend is a `Basic`: its methods and their docstrings are the contract.
Backend = Basic

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

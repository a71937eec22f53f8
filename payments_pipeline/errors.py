"""One-line error text for logs, columns and refusals: never a statement's parameters.

Every door (CLI, receiver, workers, Dagster steps) and the core name a failure through
`short_error`; the receiver's logs decide how much of a database error to keep with
`database_error`. Both exist because SQLAlchemy's own message lists the bound parameters of the
failed statement: payloads and secrets, which must never reach a log line or `last_error`.
"""

from __future__ import annotations

import sqlalchemy as sa


def short_error(exc: BaseException) -> str:
    """One line naming the failure. For database errors only the driver's first line: SQLAlchemy's
    own message lists the statement's parameters, which must not reach a log or a column."""
    inner = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {text}"[:300] if text else type(inner).__name__


def database_error(exc: BaseException) -> str:
    """Connection failures keep the driver's first line (it names the host or the file); any other
    database error only its type: a data error's message can quote the value it refused."""
    connection_kinds = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
    if isinstance(exc, connection_kinds):
        return short_error(exc)
    inner = getattr(exc, "orig", None) or exc
    return type(inner).__name__

"""Logging for the server: one format on stderr, and no query string in the access log.

Monetbil's query-string variant carries `sign` (and the customer's fields) in the URL, and
uvicorn's access log prints the path with its query string. `RedactQueryFilter` rewrites that
argument of every access-log record to the bare path plus `?[redacted]`, so neither the signature
nor a payload field reaches a log line. `serve` installs it through the logging config it hands
uvicorn (every worker process applies it), and `create_app` also adds it to the `uvicorn.access`
logger, so an app started by other means (`uvicorn --factory ...`) is covered too.

SQLAlchemy's pool logs `Exception during reset or similar` with a whole traceback at ERROR when it
discards a connection the server killed mid-transaction (seen on MariaDB in the soak).
`OneLinePoolErrorFilter` keeps that record to one line, naming the exception's type: the request
that met the dead connection has already been answered 503 and logged once.
"""

from __future__ import annotations

import logging
from typing import Any

ACCESS_LOGGER = "uvicorn.access"
POOL_LOGGER = "sqlalchemy.pool"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PATH_ARG = 2  # uvicorn: (client_addr, method, path_with_query, http_version, status_code)


class RedactQueryFilter(logging.Filter):
    """Strip the query string from uvicorn access-log records (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH_ARG:
            path = args[_PATH_ARG]
            if isinstance(path, str) and "?" in path:
                redacted = path.split("?", 1)[0] + "?[redacted]"
                record.args = (*args[:_PATH_ARG], redacted, *args[_PATH_ARG + 1 :])
        return True


class OneLinePoolErrorFilter(logging.Filter):
    """Fold the traceback of `sqlalchemy.pool` records into one line (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(POOL_LOGGER) and record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def install_access_log_redaction() -> None:
    """Add the filter to the `uvicorn.access` logger once (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
        logger.addFilter(RedactQueryFilter())


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn: every logger to stderr in our format, the access
    log through the redaction filter. Handed to uvicorn, so each worker process applies it."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact_query": {"()": f"{__name__}.RedactQueryFilter"},
            "one_line_pool_errors": {"()": f"{__name__}.OneLinePoolErrorFilter"},
        },
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
                # On the handler: the pool logs through child loggers (sqlalchemy.pool.impl...),
                # which a filter on the `sqlalchemy.pool` logger itself would not see.
                "filters": ["one_line_pool_errors"],
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
                "filters": ["redact_query"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            ACCESS_LOGGER: {
                "handlers": ["access"],
                "level": level.upper(),
                "propagate": False,
                "filters": ["redact_query"],
            },
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }

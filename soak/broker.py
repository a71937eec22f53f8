"""The run's own RabbitMQ queue (`--dispatch celery`): `soak_<random>`, deleted at the end.

Every process of the run reads it from `PAYMENTS_CELERY_QUEUE`: the receiver and the sweeps
publish to it, the Celery workers consume it. Nothing else uses it, so a run never sees another
run's messages (nor the suite's). `delete()` removes the queue and the exchange of the same name
that Celery declares with it; the orchestrator calls it once every process has stopped, whatever
ended the run.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any

import kombu

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


class BrokerDown(RuntimeError):
    """The broker did not answer (the message names it, its password masked)."""


class SoakQueue:
    def __init__(self, broker_url: str) -> None:
        self.url = broker_url
        self.name = f"soak_{secrets.token_hex(6)}"
        self._connection = kombu.Connection(broker_url, connect_timeout=CONNECT_TIMEOUT)
        self.where = self._connection.as_uri()  # the password masked

    @property
    def password(self) -> str | None:
        return self._connection.password or None

    def check(self) -> None:
        """Connect once, or raise `BrokerDown`."""
        try:
            self._connection.ensure_connection(
                max_retries=1, interval_start=0.5, timeout=CONNECT_TIMEOUT
            )
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise BrokerDown(
                f"the broker at {self.where} does not answer: {type(exc).__name__}: {first}"
            ) from None

    def depth(self) -> int | None:
        """Messages waiting in the queue now (None if it does not exist or the broker is gone)."""
        try:
            channel = self._connection.channel()
        except Exception:
            return None
        try:
            return int(channel.queue_declare(self.name, passive=True).message_count)
        except Exception:  # not declared (no process ever used it); the channel is closed by it
            return None
        finally:
            _close(channel)

    def delete(self) -> None:
        """Delete the queue and its exchange (idempotent; a failure is logged, not raised)."""
        try:
            for kind in ("queue", "exchange"):
                channel = self._connection.channel()
                try:
                    if kind == "queue":
                        channel.queue_delete(self.name)
                    else:
                        channel.exchange_delete(self.name)
                except Exception as exc:  # never declared: nothing to delete
                    log.debug("%s %s not deleted: %s", kind, self.name, type(exc).__name__)
                finally:
                    _close(channel)
        except Exception as exc:
            log.warning("could not delete queue %s at %s: %s", self.name, self.where, exc)
        finally:
            self._connection.release()


def _close(channel: Any) -> None:
    with contextlib.suppress(Exception):
        channel.close()

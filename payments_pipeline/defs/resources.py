"""Resources: the payments database, and the sweep's run-level settings.

`payments_db` owns the connection pool: it builds the `Engine` when a run starts and disposes of
it when the run ends; sensor ticks share one engine per process (see `yield_for_execution`).
Assets, checks and sensors never create engines. Its URL comes through `dg.EnvVar`, resolved
where the run executes: a password never lands in the definitions, the run config or the instance.

`sweep` is what a launch may override per run (`minutes`, `provider`): `defs/sweep_config.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from sqlalchemy import Engine

from .. import store
from ..config import Settings, load_settings
from .sweep_config import ProviderChoice, SweepSettings, sweep_resource, sweep_run_config

__all__ = [
    "PaymentsDatabase",
    "ProviderChoice",
    "SweepSettings",
    "build_resources",
    "sweep_run_config",
]

DATABASE_URL_ENV = "PAYMENTS_DATABASE_URL"


class PaymentsDatabase(dg.ConfigurableResource):
    """One engine per run or tick; disposed after it, even when the run fails."""

    url: str = Field(description=f"SQLAlchemy URL of the payments database (${DATABASE_URL_ENV}).")

    _engine: Engine | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[PaymentsDatabase]:
        if context.run is None:
            # A sensor tick, every 30 s in the same long-lived code server: keep one pooled
            # connection between ticks. A new engine per tick pays a new PostgreSQL backend and
            # SQLAlchemy's dialect setup, ~10 ms of a ~15 ms tick whose query takes ~2 ms.
            self._engine = _tick_engine(self.url)
            try:
                yield self
            finally:
                self._engine = None
            return
        # The run processes what it claims (inline): a run hung mid-handler must not keep its
        # locks past the point where the next sweep reclaims the event.
        timeout = load_settings().processing_timeout
        engine = store.make_engine(self.url, idle_in_transaction_timeout=timeout)
        self._engine = engine
        try:
            yield self
        finally:
            self._engine = None
            engine.dispose()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("payments_db is only usable inside a run or a sensor tick")
        return self._engine


@functools.cache
def _tick_engine(url: str) -> Engine:
    """One engine per database for the sensor's ticks in this process (pre-pinged on checkout),
    without parallel plans (`make_engine`'s `serial`)."""
    return store.make_engine(url, serial=True)


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources `defs` binds; `settings` only supplies the default `minutes`."""
    return {
        "payments_db": PaymentsDatabase(url=dg.EnvVar(DATABASE_URL_ENV)),
        "sweep": sweep_resource(settings.stuck_requeue_minutes),
        # The phases hand frozen dataclasses to each other inside one run: memory is the honest
        # place for them (a pickle on disk would let a later run replay another sweep's claim).
        "sweep_io_manager": dg.mem_io_manager,
    }

"""Resources: the payments database, the product's settings, the dispatch engine, and the sweep's
run-level settings.

`payments_db` owns the connection pool: it builds the `Engine` when a run starts and disposes of
it when the run ends; sensor ticks share one engine per process (see `yield_for_execution`).
Assets, checks and sensors never create engines. Its URL comes through `dg.EnvVar`, resolved
where the run executes: a password never lands in the definitions, the run config or the instance.

`settings` reads the product's settings (`config.load_settings`) where the run executes, when it
starts: asset and op bodies take what they need from it, never from the environment.
`dispatcher` builds the core's `Dispatcher` that hands claimed events on; its `mode` comes through
`dg.EnvVar("PAYMENTS_DISPATCH")` like the database URL (inline when the code location loads
without it), and a launch may set it per run (the demo runs `inline`).

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
from ..config import Settings, dispatch_mode, load_settings
from ..dispatch import Dispatcher, build_dispatcher
from ..models import DispatchMode
from .sweep_config import ProviderChoice, SweepSettings, sweep_resource, sweep_run_config

__all__ = [
    "PaymentsDatabase",
    "PaymentsDispatcher",
    "ProviderChoice",
    "SweepSettings",
    "build_resources",
    "payments_settings",
    "sweep_run_config",
]

DATABASE_URL_ENV = "PAYMENTS_DATABASE_URL"
DISPATCH_ENV = "PAYMENTS_DISPATCH"


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


@dg.resource(
    description="The product's settings (`config.load_settings`), read where the run executes, "
    "when it starts."
)
def payments_settings(_context: dg.InitResourceContext) -> Settings:
    """Read once per run (a key set or rotated for the code location reaches the next run
    without a reload)."""
    return load_settings()


class PaymentsDispatcher(dg.ConfigurableResource):
    """How the sweep, a replay and a reconciliation hand the events they claimed on."""

    mode: str = Field(
        default=DispatchMode.INLINE.value,
        description=f"The dispatch engine: inline, table or celery (${DISPATCH_ENV}).",
    )

    @property
    def dispatch_mode(self) -> DispatchMode:
        return dispatch_mode(self.mode, DISPATCH_ENV)

    def build(self, engine: Engine, settings: Settings) -> Dispatcher:
        """A dispatcher of its own for one step, over the run's engine (inline: it counts the
        outcomes of what this step handed on, and only that)."""
        return build_dispatcher(self.dispatch_mode, engine, settings)


@functools.cache
def _tick_engine(url: str) -> Engine:
    """One engine per database for the sensor's ticks in this process (pre-pinged on checkout),
    without parallel plans (`make_engine`'s `serial`)."""
    return store.make_engine(url, serial=True)


def _dispatch_mode_source() -> str | dg.EnvVar:
    """PAYMENTS_DISPATCH through `dg.EnvVar` (resolved where the run executes) when it is set
    where the code location loads; the default engine otherwise (an EnvVar of an unset variable
    would fail every run)."""
    source = dg.EnvVar(DISPATCH_ENV)
    return source if source.get_value() is not None else DispatchMode.INLINE.value


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources `defs` binds; `settings` only supplies the default `minutes`."""
    return {
        "payments_db": PaymentsDatabase(url=dg.EnvVar(DATABASE_URL_ENV)),
        "settings": payments_settings,
        "dispatcher": PaymentsDispatcher(mode=_dispatch_mode_source()),
        "sweep": sweep_resource(settings.stuck_requeue_minutes),
        # The phases hand frozen dataclasses to each other inside one run: memory is the honest
        # place for them (a pickle on disk would let a later run replay another sweep's claim).
        "sweep_io_manager": dg.mem_io_manager,
    }

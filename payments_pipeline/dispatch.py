"""How a claimed event is handed to processing.

A claim (gate or sweep) decides *that* an event goes on; a `Dispatcher` decides *how*. The default,
`InlineDispatcher`, processes the event in the calling thread. A queue-backed dispatcher only has
to implement `dispatch`: if it loses the event, the row keeps its `dispatched_at` and the sweep
finds it again as `dispatch_lost`.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from .config import Settings
from .handlers import HandlerRegistry, default_registry
from .models import EventRef, ProcessOutcome
from .processing import process_event


class Dispatcher(Protocol):
    def dispatch(self, event: EventRef) -> None:
        """Hand one claimed event to processing; raise if it could not be handed on."""


class InlineDispatcher:
    """Processes each event synchronously, in the caller's thread."""

    def __init__(
        self, engine: Engine, settings: Settings, registry: HandlerRegistry | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry or default_registry()
        self.outcomes: dict[ProcessOutcome, int] = {}

    def dispatch(self, event: EventRef) -> None:
        outcome = process_event(
            self.engine, event.id, settings=self.settings, registry=self.registry
        )
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class NullDispatcher:
    """Claims without processing: for `--dry-run`-like measurements and the benchmarks."""

    def __init__(self) -> None:
        self.count = 0

    def dispatch(self, event: EventRef) -> None:
        self.count += 1

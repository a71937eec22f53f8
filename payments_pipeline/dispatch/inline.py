"""`inline`: process each claimed event in the caller (demo, SQLite, tests, small installs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import Engine

from ..config import Settings
from ..handlers import HandlerRegistry, default_registry
from ..models import EventRef, ProcessOutcome
from ..processing import process_event
from .base import Unsent, one_by_one

# Told each outcome and the attempt's seconds (None when no attempt ran: `not_claimed`).
OutcomeObserver = Callable[[ProcessOutcome, float | None], None]


class InlineDispatcher:
    """Processes each event synchronously, in the caller's thread; counts the outcomes, and tells
    `on_outcome` (the receiver's metrics) of each one."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        registry: HandlerRegistry | None = None,
        *,
        on_outcome: OutcomeObserver | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry or default_registry()
        self._outcomes: dict[ProcessOutcome, int] = {}
        self._on_outcome = on_outcome

    def outcomes(self) -> Mapping[ProcessOutcome, int]:
        """What processing made of each event this dispatcher processed, counted."""
        return dict(self._outcomes)

    def dispatch_many(self, events: Sequence[EventRef]) -> list[Unsent]:
        return one_by_one(self, events)

    def dispatch(self, event: EventRef) -> None:
        started = time.perf_counter()
        outcome = process_event(
            self.engine, event.id, settings=self.settings, registry=self.registry
        )
        self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
        if self._on_outcome is not None:
            attempted = outcome is not ProcessOutcome.NOT_CLAIMED
            self._on_outcome(outcome, time.perf_counter() - started if attempted else None)

"""`inline`: process each claimed event in the caller (demo, SQLite, tests, small installs)."""

from __future__ import annotations

from sqlalchemy import Engine

from ..config import Settings
from ..handlers import HandlerRegistry, default_registry
from ..models import EventRef, ProcessOutcome
from ..processing import process_event


class InlineDispatcher:
    """Processes each event synchronously, in the caller's thread; counts the outcomes."""

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

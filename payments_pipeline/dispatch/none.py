"""`none`: claim and hand nothing on (the receiver's intake alone, benchmarks, a dry count).

Nobody processes such an event until a sweep or a worker picks it up (`dispatch_lost` after
`minutes`); the dispatcher only counts what it was given.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models import EventRef
from .base import Unsent


class NullDispatcher:
    """Claims without processing: counts the events it was handed."""

    def __init__(self) -> None:
        self.count = 0

    def dispatch(self, event: EventRef) -> None:
        self.count += 1

    def dispatch_many(self, events: Sequence[EventRef]) -> list[Unsent]:
        self.count += len(events)
        return []

    def outcomes(self) -> None:
        return None  # nothing processed here

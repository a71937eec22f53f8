"""`none`: claim and hand nothing on (the receiver's intake alone, benchmarks, a dry count).

Nobody processes such an event until a sweep or a worker picks it up (`dispatch_lost` after
`minutes`); the dispatcher only counts what it was given.
"""

from __future__ import annotations

from ..models import EventRef


class NullDispatcher:
    """Claims without processing: counts the events it was handed."""

    def __init__(self) -> None:
        self.count = 0

    def dispatch(self, event: EventRef) -> None:
        self.count += 1

"""`table` (the table as the queue): dispatch is the claim already made.

A claim stamps `dispatched_at` and clears `processing_started_at` (the start of an attempt sets it
again); an event with both so is *handed on and not yet started*: it is the queued job, and
`payments-pipeline worker` processes (`worker.Worker`) take such rows from the table. Nothing is
sent anywhere, so nothing can be lost between the claim and a worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models import EventRef
from .base import Unsent


class TableDispatcher:
    """Dispatch = the claim already made: the row waits in the table for a worker."""

    def dispatch(self, event: EventRef) -> None:
        return None

    def dispatch_many(self, events: Sequence[EventRef]) -> list[Unsent]:
        return []

    def outcomes(self) -> None:
        return None  # nothing processed here

"""The `Dispatcher` protocol: how a claimed event is handed to processing.

A claim (gate, sweep, replay) decides *that* an event goes on; a dispatcher decides *how*. If a
dispatcher loses the event, nothing is lost: the row keeps its `dispatched_at` and the sweep finds
it again as `dispatch_lost`. A dispatcher raises when it could not hand the event on, so the caller
can record that (`dispatch_failed` in the sweep's audit).
"""

from __future__ import annotations

from typing import Protocol

from ..models import EventRef


class Dispatcher(Protocol):
    def dispatch(self, event: EventRef) -> None:
        """Hand one claimed event to processing; raise if it could not be handed on."""

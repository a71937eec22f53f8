"""The `Dispatcher` protocol: how a claimed event is handed to processing.

A claim (gate, sweep, replay) decides *that* an event goes on; a dispatcher decides *how*. If a
dispatcher loses the event, nothing is lost: the row keeps its `dispatched_at` and the sweep finds
it again as `dispatch_lost`. A dispatcher raises when it could not hand the event on, so the caller
can record that (`dispatch_failed` in the sweep's audit).

Doors that claim many events at once (the sweep, a replay, a reconciliation page) hand them on
together with `dispatch_many`: the engines implement `BatchDispatcher` (the celery engine publishes
a few hundred ids a message over one connection), and a dispatcher of the caller's own that only
has `dispatch` is called once per event.

`outcomes()` tells a door what processing made of the events when the dispatcher processed them
itself (`inline`): the sweep's and the replay's run pages count them; every other engine hands
them on and answers None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..models import EventRef, ProcessOutcome


class Dispatcher(Protocol):
    def dispatch(self, event: EventRef) -> None:
        """Hand one claimed event to processing; raise if it could not be handed on."""

    def outcomes(self) -> Mapping[ProcessOutcome, int] | None:
        """What processing made of the events handed on so far, when this dispatcher processed
        them itself; None when it handed them to someone else."""


@dataclass(frozen=True)
class Unsent:
    """An event a dispatcher could not hand on, and why: the caller records it, the sweep
    recovers it (`dispatch_lost`)."""

    event: EventRef
    error: Exception


@runtime_checkable
class BatchDispatcher(Protocol):
    """What `dispatch_many` looks for at run time: a dispatcher that hands many events on at
    once (its `outcomes` is not part of the check, so a caller's own batching dispatcher without
    one still batches)."""

    def dispatch(self, event: EventRef) -> None: ...

    def dispatch_many(self, events: Sequence[EventRef]) -> list[Unsent]:
        """Hand many claimed events on; those that could not be, with the error (never raises
        for a failed hand-off)."""


def dispatch_many(dispatcher: Dispatcher, events: Sequence[EventRef]) -> list[Unsent]:
    """Hand `events` on through `dispatcher`, at once where it can (`BatchDispatcher`), one by
    one otherwise; the events it could not hand on."""
    if isinstance(dispatcher, BatchDispatcher):
        return dispatcher.dispatch_many(events)
    return one_by_one(dispatcher, events)


def unsent_errors(dispatcher: Dispatcher, events: Sequence[EventRef]) -> dict[int, Exception]:
    """`dispatch_many`, keyed by event id: why each event that could not be handed on was not."""
    return {u.event.id: u.error for u in dispatch_many(dispatcher, events)}


def one_by_one(dispatcher: Dispatcher, events: Sequence[EventRef]) -> list[Unsent]:
    """`dispatch` each event, collecting the failures (a dispatcher with nothing better)."""
    unsent: list[Unsent] = []
    for event in events:
        try:
            dispatcher.dispatch(event)
        except Exception as exc:
            unsent.append(Unsent(event, exc))
    return unsent

"""Event handlers: what processing an event does to `payments`, and the registry users extend.

A handler runs inside the processing transaction, after the attempt fence was taken: everything it
writes through `ctx.conn` commits together with `status='processed'`, or not at all. Handlers for
the built-in types parse the provider payload into a `PaymentUpdate` and apply it with a
compare-and-set that never lets an older event overwrite a newer state.

Add your own:

    registry = default_registry()

    @registry.handler("stripe", "invoice.paid")
    def on_invoice_paid(ctx: HandlerContext) -> None:
        ...
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from . import payment_state, store
from .models import PaymentFacts, PaymentStatus, PaymentUpdate, Provider, WebhookEvent
from .providers import monetbil, stripe

log = logging.getLogger(__name__)

# Compare-and-set retries: each lost race means another event for the same payment committed first;
# a handful is plenty, and a failure here is retried by the normal backoff anyway.
_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class HandlerContext:
    conn: Connection
    event: WebhookEvent
    attempt: int
    now: dt.datetime


Handler = Callable[[HandlerContext], None]


class HandlerRegistry:
    """(provider, event_type) -> handler. Unknown types have no handler and no effect."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[Provider, str], Handler] = {}

    def register(self, provider: Provider | str, event_type: str, handler: Handler) -> None:
        self._handlers[(Provider(provider), event_type)] = handler

    def handler(self, provider: Provider | str, event_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of `register`."""

        def decorate(fn: Handler) -> Handler:
            self.register(provider, event_type, fn)
            return fn

        return decorate

    def get(self, provider: Provider, event_type: str) -> Handler | None:
        return self._handlers.get((provider, event_type))

    def event_types(self) -> list[tuple[Provider, str]]:
        return sorted(self._handlers)


def apply_payment_update(ctx: HandlerContext, update: PaymentUpdate) -> bool:
    """Apply one provider update to `payments`; True when it changed the payment.

    Decisions are taken on a row we read and committed with a compare-and-set on what we read, so
    two events for the same payment processed at once serialise instead of racing. The ledger row
    (unique per event) makes a second application of the same event impossible.
    """
    conn, event = ctx.conn, ctx.event
    # A ledger row commits only with `processed`, under an attempt's fence: the first attempt
    # ever (number 1; a replay continues the numbering) cannot find one, and skips the read.
    if ctx.attempt > 1 and store.ledger_has_event(conn, event_id=event.id):
        return False  # applied by an earlier attempt or before a replay: never twice
    for _ in range(_CAS_ATTEMPTS):
        current = store.get_payment(conn, provider=update.provider, reference=update.reference)
        facts = payment_state.apply_update(
            None if current is None else PaymentFacts.of(current), update
        )
        if facts is None:
            return False
        if current is None:
            written = store.insert_payment_if_absent(
                conn,
                provider=update.provider,
                reference=update.reference,
                facts=facts,
                event_id=event.id,
                now=ctx.now,
            )
        else:
            written = store.update_payment_if_unchanged(
                conn, seen=current, facts=facts, event_id=event.id, now=ctx.now
            )
        if written:
            _record(ctx, update, None if current is None else current.status, facts.status)
            return True
        # another event for this payment committed first: decide again on its state
    raise RuntimeError(f"payment {update.reference!r} kept changing under event {event.id}")


def _record(
    ctx: HandlerContext,
    update: PaymentUpdate,
    from_status: PaymentStatus | None,
    to_status: PaymentStatus,
) -> None:
    store.insert_ledger_entry(
        ctx.conn,
        event_id=ctx.event.id,
        attempt=ctx.attempt,
        provider=update.provider,
        reference=update.reference,
        from_status=from_status,
        to_status=to_status,
        now=ctx.now,
    )


def _stripe_handler(ctx: HandlerContext) -> None:
    update = stripe.payment_update(ctx.event.event_type, ctx.event.payload)
    if update is not None:
        apply_payment_update(ctx, update)


def _monetbil_handler(ctx: HandlerContext) -> None:
    update = monetbil.payment_update(ctx.event.event_type, ctx.event.payload)
    if update is not None:
        apply_payment_update(ctx, update)


def default_registry() -> HandlerRegistry:
    """The built-in handlers: Stripe payment intents, refunds, checkout; Monetbil notifications."""
    registry = HandlerRegistry()
    for event_type in stripe.HANDLED_EVENT_TYPES:
        registry.register(Provider.STRIPE, event_type, _stripe_handler)
    for event_type in sorted(monetbil.EVENT_TYPES):
        registry.register(Provider.MONETBIL, event_type, _monetbil_handler)
    return registry

"""The rule deciding what a provider event does to a payment: pure, no database.

The store calls `apply_update` inside its compare-and-set (read the row, decide, `UPDATE ...
WHERE` the row still holds what was read). `replay` folds a list of updates with the same rule,
independently of the store, so a soak test can compare the database against it.

Rules (an older event never overwrites a newer state; `refunded` never regresses; written for
users in docs/semantics.md, "Payments: duplicates and out-of-order events"):

- Lifecycle rank: pending 0 < failed 1 < cancelled 2 < succeeded 3 < partially_refunded 4 <
  refunded 5. A change is allowed exactly when it moves forward in rank: a success beats an
  earlier failed or cancelled of the same reference (a payer who cancelled and then paid with a
  new transaction has paid), a late failure never undoes a success, a refund after a success
  moves it on, and refunded is terminal.
- Same status again: a no-op for the status, except that a pending or failed payment may be
  refreshed (new amounts) by a strictly newer event: both timestamps known and
  `update.occurred_at > current_at`. Equal or unknown timestamps (Monetbil sends none) never
  refresh.
- Amounts: an update that moves the status (or refreshes it) writes the amounts it names; one
  whose amounts are fill-only (a refund names the charge's amounts) or that does not move the
  status only fills amounts the payment does not know yet. `amount_refunded` is a cumulative sum
  in every event, so the larger one wins whatever the arrival order: a second partial refund
  raises it, a late first one does not lower it.
- `livemode` and the reference are the first event's; the clock (`last_event_at`) only moves
  forward.

What this guarantees about arrival order (property-tested in test_payment_state.py): since rank
only grows and every allowed change moves forward, the final status of a payment is the highest
ranked status among its updates, whatever order they arrive in, and `amount_refunded` the largest
sum. Timestamps never change which status wins; they only decide whether a same-status refresh
applies (and so which amounts a pending or failed payment keeps).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from payments_pipeline.models import PaymentFacts, PaymentStatus, PaymentUpdate, Provider

T = TypeVar("T")

_P = PaymentStatus

RANK: Mapping[PaymentStatus, int] = MappingProxyType(
    {
        _P.PENDING: 0,
        _P.FAILED: 1,
        _P.CANCELLED: 2,
        _P.SUCCEEDED: 3,
        _P.PARTIALLY_REFUNDED: 4,
        _P.REFUNDED: 5,
    }
)
ALLOWED: Mapping[PaymentStatus, frozenset[PaymentStatus]] = MappingProxyType(
    {old: frozenset(new for new in _P if RANK[new] > RANK[old]) for old in _P}
)
TERMINAL: frozenset[PaymentStatus] = frozenset(s for s, nexts in ALLOWED.items() if not nexts)
REFRESHABLE: frozenset[PaymentStatus] = frozenset({_P.PENDING, _P.FAILED})


def next_state(
    current_status: PaymentStatus | None,
    current_at: dt.datetime | None,
    update: PaymentUpdate,
) -> PaymentStatus | None:
    """The status `update` moves the payment to, or None if it must not be applied.

    `current_status`/`current_at` are the stored status and `last_event_at` (None, None: no row
    yet). A non-None result for the same status means "refresh": write the update's amount and
    currency and advance `last_event_at`, the status stays.
    """
    if current_status is None:
        return update.status
    newer = older = False
    if current_at is not None and update.occurred_at is not None:
        newer = update.occurred_at > current_at
        older = update.occurred_at < current_at
    if update.status == current_status:
        return current_status if current_status in REFRESHABLE and newer else None
    if update.status not in ALLOWED[current_status]:
        return None
    if older and RANK[update.status] <= RANK[current_status]:
        return None  # unreachable: every allowed change moves forward; kept as the stated rule
    return update.status


def next_event_at(current_at: dt.datetime | None, update: PaymentUpdate) -> dt.datetime | None:
    """`last_event_at` after applying `update`: the later of the two known timestamps.

    An older event that still applies (a refund arriving after a newer state) must not move the
    payment's clock back, or a stale same-status refresh could then pass the "newer" test.
    """
    if current_at is None:
        return update.occurred_at
    if update.occurred_at is None:
        return current_at
    return max(current_at, update.occurred_at)


def _fill(known: T | None, said: T | None) -> T | None:
    return said if known is None else known


def apply_update(current: PaymentFacts | None, update: PaymentUpdate) -> PaymentFacts | None:
    """The payment after `update`, or None when it changes nothing (module docstring: rules)."""
    refunded = update.amount_refunded or 0
    if current is None:
        return PaymentFacts(
            status=update.status,
            amount=update.amount,
            amount_received=update.amount_received,
            amount_refunded=refunded,
            currency=update.currency,
            livemode=update.livemode,
            last_event_at=update.occurred_at,
        )
    status = next_state(current.status, current.last_event_at, update)
    writes = status is not None and not update.amounts_fill_only
    after = PaymentFacts(
        status=current.status if status is None else status,
        amount=update.amount if writes and update.amount is not None else current.amount,
        amount_received=(
            update.amount_received
            if writes and update.amount_received is not None
            else _fill(current.amount_received, update.amount_received)
        ),
        amount_refunded=max(current.amount_refunded, refunded),
        currency=update.currency if writes and update.currency else current.currency,
        livemode=current.livemode,
        last_event_at=current.last_event_at,
    )
    if not writes:  # the amounts the payment does not know yet
        after = dataclasses.replace(
            after,
            amount=_fill(current.amount, update.amount),
            currency=_fill(current.currency, update.currency),
        )
    if status is None and after == current:
        return None
    return dataclasses.replace(after, last_event_at=next_event_at(current.last_event_at, update))


def replay_facts(updates: Iterable[PaymentUpdate]) -> dict[tuple[Provider, str], PaymentFacts]:
    """Fold `updates`, in the order given, into each payment's final facts with `apply_update`.

    The oracle for soak tests: what the `payments` table must hold after processing the same
    updates in the same order.
    """
    state: dict[tuple[Provider, str], PaymentFacts] = {}
    for update in updates:
        key = (update.provider, update.reference)
        new = apply_update(state.get(key), update)
        if new is not None:
            state[key] = new
    return state


def replay(updates: Iterable[PaymentUpdate]) -> dict[tuple[Provider, str], PaymentStatus]:
    """`replay_facts`, each payment's final status only."""
    return {key: facts.status for key, facts in replay_facts(updates).items()}

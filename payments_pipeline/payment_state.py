"""The rule deciding whether a provider event changes a payment's status: pure, no database.

The store calls `next_state` inside its compare-and-set (read status and `last_event_at`, decide,
`UPDATE ... WHERE status = <read status>`), and when it applies an update it sets `last_event_at`
to `next_event_at(...)`. `replay` folds a list of updates with the same rule, independently of the
store, so a soak test can compare the database against it.

Rules (an older event never overwrites a newer state; a terminal state never regresses; written
for users in docs/semantics.md, "Payments: duplicates and out-of-order events"):

- Lifecycle rank: pending 0 < failed 1 < succeeded 2 = cancelled 2 < refunded 3.
- Allowed changes: no row yet -> anything; pending -> failed, succeeded, cancelled, refunded;
  failed -> succeeded, cancelled, refunded; succeeded -> refunded; cancelled and refunded are
  terminal. Every allowed change moves forward in rank (checked at import).
- Same status again: a no-op (None), except that a pending or failed payment may be refreshed
  (new amount) by a strictly newer event: both timestamps known and `update.occurred_at >
  current_at`. Equal or unknown timestamps (Monetbil sends none) never refresh.
- An older event (both timestamps known, `update.occurred_at < current_at`) applies only if it
  moves forward in rank, so an older `failed` never overwrites a newer `succeeded` while a refund
  that arrives before its success still ends `refunded`.

What this guarantees about arrival order (property-tested in test_payment_state.py). For the
updates of one payment, with any timestamps:

1. No update ever lowers the rank; cancelled and refunded are absorbing.
2. Without a `cancelled` update, the final status is the highest-ranked status among the updates,
   whatever the arrival order: the result is order-independent.
3. With a `cancelled` update it is NOT order-independent, because cancelled is incomparable with
   succeeded (same rank, neither replaces the other) and blocks refunded. Exactly: if a
   succeeded or refunded update arrives before the first cancelled one, the cancel is ignored and
   the final status is the highest-ranked among the non-cancelled updates; otherwise the payment
   ends cancelled. A provider does not send both for one payment, so this only decides races
   between contradictory deliveries: first come, first served, never a regression.

Since every allowed change moves forward in rank, timestamps never change which status wins;
they only decide whether a same-status refresh applies (and so which amount is kept).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from payments_pipeline.models import PaymentStatus, PaymentUpdate, Provider

_P = PaymentStatus

RANK: Mapping[PaymentStatus, int] = MappingProxyType(
    {_P.PENDING: 0, _P.FAILED: 1, _P.SUCCEEDED: 2, _P.CANCELLED: 2, _P.REFUNDED: 3}
)
ALLOWED: Mapping[PaymentStatus, frozenset[PaymentStatus]] = MappingProxyType(
    {
        _P.PENDING: frozenset({_P.FAILED, _P.SUCCEEDED, _P.CANCELLED, _P.REFUNDED}),
        _P.FAILED: frozenset({_P.SUCCEEDED, _P.CANCELLED, _P.REFUNDED}),
        _P.SUCCEEDED: frozenset({_P.REFUNDED}),
        _P.CANCELLED: frozenset(),
        _P.REFUNDED: frozenset(),
    }
)
TERMINAL: frozenset[PaymentStatus] = frozenset(s for s, nexts in ALLOWED.items() if not nexts)
REFRESHABLE: frozenset[PaymentStatus] = frozenset({_P.PENDING, _P.FAILED})

if any(RANK[new] <= RANK[old] for old, news in ALLOWED.items() for new in news):
    raise AssertionError("every allowed payment status change must move forward in rank")


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
        return None  # unreachable with today's table (checked above); kept as the stated rule
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


def replay(updates: Iterable[PaymentUpdate]) -> dict[tuple[Provider, str], PaymentStatus]:
    """Fold `updates`, in the order given, into each payment's final status with `next_state`.

    The oracle for soak tests: what the `payments` table must hold after processing the same
    updates in the same order.
    """
    state: dict[tuple[Provider, str], tuple[PaymentStatus | None, dt.datetime | None]] = {}
    for update in updates:
        key = (update.provider, update.reference)
        status, at = state.get(key, (None, None))
        new = next_state(status, at, update)
        if new is not None:
            state[key] = (new, next_event_at(at, update))
    return {key: status for key, (status, _) in state.items() if status is not None}

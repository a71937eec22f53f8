"""The payment lifecycle rule: transitions, event ordering and what holds for any arrival order."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_pipeline import payment_state
from payments_pipeline.models import PaymentStatus, PaymentUpdate, Provider
from payments_pipeline.payment_state import next_event_at, next_state, replay

P = PaymentStatus
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)


def at(seconds: int | None) -> dt.datetime | None:
    return None if seconds is None else T0 + dt.timedelta(seconds=seconds)


def upd(
    status: PaymentStatus,
    seconds: int | None = None,
    reference: str = "pi_1",
    provider: Provider = Provider.STRIPE,
    amount: int | None = 100,
) -> PaymentUpdate:
    return PaymentUpdate(provider, reference, status, amount, "usd", at(seconds))


# The contract's table, written out independently of the module's: a success beats an earlier
# failed/cancelled, a late failure never undoes a success, refunds follow, refunded is terminal.
_LATER = {
    P.PENDING: {P.FAILED, P.CANCELLED, P.SUCCEEDED, P.PARTIALLY_REFUNDED, P.REFUNDED},
    P.FAILED: {P.CANCELLED, P.SUCCEEDED, P.PARTIALLY_REFUNDED, P.REFUNDED},
    P.CANCELLED: {P.SUCCEEDED, P.PARTIALLY_REFUNDED, P.REFUNDED},
    P.SUCCEEDED: {P.PARTIALLY_REFUNDED, P.REFUNDED},
    P.PARTIALLY_REFUNDED: {P.REFUNDED},
    P.REFUNDED: set(),
}
ALLOWED = {(a, b) for a, bs in _LATER.items() for b in bs}
CHANGES = [(a, b) for a, b in itertools.product(P, P) if a is not b]


@pytest.mark.parametrize("status", list(P))
def test_a_new_payment_takes_any_status(status: PaymentStatus) -> None:
    assert next_state(None, None, upd(status)) is status
    assert next_state(None, None, upd(status, 5)) is status


@pytest.mark.parametrize(("current", "new"), CHANGES)
@pytest.mark.parametrize(
    ("current_s", "update_s"), [(None, None), (10, None), (None, 10), (10, 20), (10, 10), (20, 10)]
)
def test_status_changes_follow_the_table_whatever_the_timestamps(
    current: PaymentStatus, new: PaymentStatus, current_s: int | None, update_s: int | None
) -> None:
    expected = new if (current, new) in ALLOWED else None
    assert next_state(current, at(current_s), upd(new, update_s)) == expected


@pytest.mark.parametrize("status", list(P))
@pytest.mark.parametrize(
    ("current_s", "update_s", "newer"),
    [
        (10, 20, True),
        (10, 10, False),
        (20, 10, False),
        (None, 10, False),
        (10, None, False),
        (None, None, False),
    ],
)
def test_same_status_refreshes_only_pending_or_failed_and_only_when_newer(
    status: PaymentStatus, current_s: int | None, update_s: int | None, newer: bool
) -> None:
    refreshable = status in (P.PENDING, P.FAILED)
    expected = status if refreshable and newer else None
    assert next_state(status, at(current_s), upd(status, update_s)) == expected


def test_ordering_examples() -> None:
    # An older failure never overwrites a newer success ...
    assert next_state(P.SUCCEEDED, at(20), upd(P.FAILED, 10)) is None
    # ... but a refund processed before its success still wins, and so does an older success.
    assert next_state(P.SUCCEEDED, at(20), upd(P.REFUNDED, 10)) is P.REFUNDED
    assert next_state(P.FAILED, at(20), upd(P.SUCCEEDED, 10)) is P.SUCCEEDED
    assert next_state(P.REFUNDED, at(10), upd(P.SUCCEEDED, 20)) is None
    assert next_state(P.PENDING, at(20), upd(P.PENDING, 10)) is None
    # A payer who cancelled, then paid with a new transaction, has paid; the reverse is a no-op.
    assert next_state(P.CANCELLED, None, upd(P.SUCCEEDED)) is P.SUCCEEDED
    assert next_state(P.SUCCEEDED, None, upd(P.CANCELLED)) is None


def test_the_tables() -> None:
    assert dict(payment_state.RANK) == {
        P.PENDING: 0,
        P.FAILED: 1,
        P.CANCELLED: 2,
        P.SUCCEEDED: 3,
        P.PARTIALLY_REFUNDED: 4,
        P.REFUNDED: 5,
    }
    assert {(a, b) for a, bs in payment_state.ALLOWED.items() for b in bs} == ALLOWED
    assert {P.REFUNDED} == payment_state.TERMINAL
    # Every change moves forward, so no ordering of events can ever lower the rank.
    assert all(payment_state.RANK[b] > payment_state.RANK[a] for a, b in ALLOWED)


def test_next_event_at_never_moves_back() -> None:
    assert next_event_at(None, upd(P.FAILED, 5)) == at(5)
    assert next_event_at(at(5), upd(P.FAILED)) == at(5)
    assert next_event_at(at(5), upd(P.FAILED, 9)) == at(9)
    assert next_event_at(at(9), upd(P.REFUNDED, 5)) == at(9)
    assert next_event_at(None, upd(P.FAILED)) is None


# --- arrival order: the properties that hold ---------------------------------------------------


def oracle(statuses: list[PaymentStatus]) -> PaymentStatus:
    """The exact final status, from the statuses alone: the highest ranked, in any order."""
    return max(statuses, key=list(_LATER).index)


timestamps = st.one_of(st.none(), st.integers(0, 50))
one_payment = st.lists(st.tuples(st.sampled_from(list(P)), timestamps), min_size=1, max_size=8)


@given(one_payment)
def test_rank_never_decreases_and_terminal_states_absorb(
    events: list[tuple[PaymentStatus, int | None]],
) -> None:
    status: PaymentStatus | None = None
    current_at: dt.datetime | None = None
    for new, seconds in events:
        update = upd(new, seconds)
        result = next_state(status, current_at, update)
        if status is not None:
            if status in payment_state.TERMINAL:
                assert result is None
            if result is not None:
                assert payment_state.RANK[result] >= payment_state.RANK[status]
                assert result is status or payment_state.RANK[result] > payment_state.RANK[status]
        if result is not None:
            status, current_at = result, next_event_at(current_at, update)


@given(one_payment)
def test_replay_matches_the_oracle_for_any_timestamps(
    events: list[tuple[PaymentStatus, int | None]],
) -> None:
    final = replay(upd(s, t) for s, t in events)
    assert final == {(Provider.STRIPE, "pi_1"): oracle([s for s, _ in events])}


@given(
    st.lists(
        st.tuples(st.sampled_from(list(P)), st.integers(0, 10**6)), min_size=1, max_size=8
    ).flatmap(lambda events: st.tuples(st.just(events), st.permutations(events)))
)
def test_every_arrival_order_ends_the_same(
    drawn: tuple[list[tuple[PaymentStatus, int]], list[tuple[PaymentStatus, int]]],
) -> None:
    events, shuffled = drawn
    key = (Provider.STRIPE, "pi_1")
    assert replay(upd(s, t) for s, t in events)[key] == replay(upd(s, t) for s, t in shuffled)[key]


def test_cancel_then_pay_ends_paid_in_either_order() -> None:
    key = (Provider.MONETBIL, "order-1")

    def mb(status: PaymentStatus) -> PaymentUpdate:
        return upd(status, reference="order-1", provider=Provider.MONETBIL)

    assert replay([mb(P.CANCELLED), mb(P.SUCCEEDED)])[key] is P.SUCCEEDED
    assert replay([mb(P.SUCCEEDED), mb(P.CANCELLED)])[key] is P.SUCCEEDED
    assert replay([mb(P.FAILED), mb(P.SUCCEEDED), mb(P.FAILED)])[key] is P.SUCCEEDED


# --- amounts -------------------------------------------------------------------------------------


def _refund(refunded: int, seconds: int, *, received: int = 1500) -> PaymentUpdate:
    """A `charge.refunded` of a charge of 2000 of which `received` was captured."""
    status = P.REFUNDED if refunded >= received else P.PARTIALLY_REFUNDED
    return PaymentUpdate(
        Provider.STRIPE,
        "pi_1",
        status,
        2000,
        "usd",
        at(seconds),
        amount_received=received,
        amount_refunded=refunded,
        amounts_fill_only=True,
    )


def _paid(amount: int, received: int, seconds: int) -> PaymentUpdate:
    return PaymentUpdate(
        Provider.STRIPE, "pi_1", P.SUCCEEDED, amount, "usd", at(seconds), amount_received=received
    )


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_refunds_add_up_whatever_the_order(order: tuple[int, ...]) -> None:
    # manual capture of 1500 of 2000, then refunds of 500, then 1000 more (cumulative sums)
    events = [_paid(2000, 1500, 1), _refund(500, 2), _refund(1500, 3)]
    final = payment_state.replay_facts(events[i] for i in order)[(Provider.STRIPE, "pi_1")]
    assert (final.status, final.amount, final.amount_received, final.amount_refunded) == (
        P.REFUNDED,
        2000,
        1500,
        1500,
    )


def test_a_partial_refund_is_kept_and_never_rewrites_the_amount() -> None:
    events = [_paid(2000, 1500, 1), _refund(500, 2, received=1500)]
    final = payment_state.replay_facts(events)[(Provider.STRIPE, "pi_1")]
    assert (final.status, final.amount, final.amount_received, final.amount_refunded) == (
        P.PARTIALLY_REFUNDED,
        2000,
        1500,
        500,
    )
    # a late first refund (a smaller cumulative sum) changes nothing
    assert payment_state.apply_update(final, _refund(300, 4)) is None


def test_livemode_is_the_first_events() -> None:
    test_mode = PaymentUpdate(Provider.STRIPE, "pi_1", P.PENDING, 1, "usd", at(1), livemode=False)
    live = PaymentUpdate(Provider.STRIPE, "pi_1", P.SUCCEEDED, 1, "usd", at(2), livemode=True)
    final = payment_state.replay_facts([test_mode, live])[(Provider.STRIPE, "pi_1")]
    assert final.status is P.SUCCEEDED and final.livemode is False


payment_keys = st.tuples(st.sampled_from(list(Provider)), st.sampled_from(["a", "b"]))


@given(st.lists(st.tuples(payment_keys, st.sampled_from(list(P)), timestamps), max_size=12))
def test_replay_keeps_payments_apart(
    events: list[tuple[tuple[Provider, str], PaymentStatus, int | None]],
) -> None:
    final = replay(upd(s, t, reference=ref, provider=prov) for (prov, ref), s, t in events)
    keys = {key for key, _, _ in events}
    assert set(final) == keys
    for key in keys:
        assert final[key] == oracle([s for k, s, _ in events if k == key])


def test_replay_of_nothing_is_empty() -> None:
    assert replay([]) == {}

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


# The brief's table, written out independently of the module's.
ALLOWED = {
    (P.PENDING, P.FAILED),
    (P.PENDING, P.SUCCEEDED),
    (P.PENDING, P.CANCELLED),
    (P.PENDING, P.REFUNDED),
    (P.FAILED, P.SUCCEEDED),
    (P.FAILED, P.CANCELLED),
    (P.FAILED, P.REFUNDED),
    (P.SUCCEEDED, P.REFUNDED),
}
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


def test_the_tables() -> None:
    assert dict(payment_state.RANK) == {
        P.PENDING: 0,
        P.FAILED: 1,
        P.SUCCEEDED: 2,
        P.CANCELLED: 2,
        P.REFUNDED: 3,
    }
    assert {(a, b) for a, bs in payment_state.ALLOWED.items() for b in bs} == ALLOWED
    assert {P.CANCELLED, P.REFUNDED} == payment_state.TERMINAL
    # Every change moves forward, so no ordering of events can ever lower the rank.
    assert all(payment_state.RANK[b] > payment_state.RANK[a] for a, b in ALLOWED)


def test_next_event_at_never_moves_back() -> None:
    assert next_event_at(None, upd(P.FAILED, 5)) == at(5)
    assert next_event_at(at(5), upd(P.FAILED)) == at(5)
    assert next_event_at(at(5), upd(P.FAILED, 9)) == at(9)
    assert next_event_at(at(9), upd(P.REFUNDED, 5)) == at(9)
    assert next_event_at(None, upd(P.FAILED)) is None


# --- arrival order: the properties that hold ---------------------------------------------------

RANK_NO_CANCEL = {P.PENDING: 0, P.FAILED: 1, P.SUCCEEDED: 2, P.REFUNDED: 3}


def oracle(statuses: list[PaymentStatus]) -> PaymentStatus:
    """The exact final status, from the arrival order alone (module docstring, points 2 and 3)."""
    if P.CANCELLED not in statuses:
        return max(statuses, key=RANK_NO_CANCEL.__getitem__)
    before_cancel = statuses[: statuses.index(P.CANCELLED)]
    if P.SUCCEEDED in before_cancel or P.REFUNDED in before_cancel:
        return max((s for s in statuses if s is not P.CANCELLED), key=RANK_NO_CANCEL.__getitem__)
    return P.CANCELLED


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
        st.tuples(
            st.sampled_from([P.PENDING, P.FAILED, P.SUCCEEDED, P.REFUNDED]), st.integers(0, 10**6)
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda e: e[1],
    ).flatmap(lambda events: st.tuples(st.just(events), st.permutations(events)))
)
def test_without_a_cancel_every_arrival_order_ends_the_same(
    drawn: tuple[list[tuple[PaymentStatus, int]], list[tuple[PaymentStatus, int]]],
) -> None:
    events, shuffled = drawn
    key = (Provider.STRIPE, "pi_1")
    assert replay(upd(s, t) for s, t in events)[key] == replay(upd(s, t) for s, t in shuffled)[key]


def test_with_a_cancel_arrival_order_decides_between_contradictions() -> None:
    key = (Provider.STRIPE, "pi_1")
    # Distinct timestamps, same two events, different arrival order: first one wins.
    assert replay([upd(P.SUCCEEDED, 1), upd(P.CANCELLED, 2)])[key] is P.SUCCEEDED
    assert replay([upd(P.CANCELLED, 2), upd(P.SUCCEEDED, 1)])[key] is P.CANCELLED
    assert replay([upd(P.CANCELLED, 1), upd(P.REFUNDED, 2)])[key] is P.CANCELLED
    assert (
        replay([upd(P.FAILED, 1), upd(P.SUCCEEDED, 3), upd(P.CANCELLED, 2), upd(P.REFUNDED, 4)])[
            key
        ]
        is P.REFUNDED
    )


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

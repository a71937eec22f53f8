"""`drift.compare` on its own: the pandas merge keeps exact integers whatever else the day holds."""

from __future__ import annotations

from payments_pipeline.drift import Difference, Expected, compare

BIG = 2**53 + 1  # 9007199254740993: fits the BIGINT columns (the handlers accept < 10**18)


def _ours(reference: str, amount_received: int) -> dict[str, object]:
    return {
        "reference": reference,
        "status": "succeeded",
        "amount_received": amount_received,
        "amount_refunded": 0,
        "currency": "eur",
        "livemode": False,
    }


def test_an_amount_difference_is_found_whether_or_not_another_payment_is_missing() -> None:
    """`compare`'s left merge turns our integer columns into float64 as soon as one payment of the
    day has no row of ours (NaN in its cells); amounts above 2**53 then lose their last digits,
    so a difference of 1 goes unseen, and the texts of those that are seen are rounded. Alone,
    the same pair is reported; next to a missing payment it is not."""
    stripe_side = Expected("pi_big", "succeeded", BIG, 0, "eur", False)
    ours = [_ours("pi_big", BIG - 1)]
    alone = compare([stripe_side], ours)
    assert alone == (Difference("pi_big", "amount_received", str(BIG - 1), str(BIG)),)

    missing = Expected("pi_lost", "succeeded", 100, 0, "eur", False)
    beside = compare([stripe_side, missing], ours)
    # With plain int64 columns the merge made floats here and the difference went unseen.
    assert beside == (
        Difference("pi_big", "amount_received", str(BIG - 1), str(BIG)),
        Difference("pi_lost", "missing_here", "", "succeeded"),
    )

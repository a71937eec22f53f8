"""Drift: does our `payments` table say what Stripe says, for the payments created on one day?

A reconciliation (`reconcile`) recovers events we know we missed. Drift answers the question
finance asks: a handler bug, events applied in a surprising order, a refund made in the dashboard
whose webhook was filtered out each leave our row wrong while no event stays stuck.

For one UTC day, Stripe's PaymentIntents created that day (their latest charge expanded, for its
refunds) and its charges created that day that have no PaymentIntent (the legacy Charges API:
their own payment, keyed `ch_...`) are listed (`providers.stripe_api.StripePayments`); our rows
for those references are read one query a page. Each Stripe payment becomes what our row should
say (`expected`, the mapping of docs/reference.md, "Drift"), and the two tables are joined with a
pandas merge, imported here at run time only (never when the code location loads, nor in the
sweep's steps). A payment created on another day is never this day's drift, whatever our row's
`created_at` says: only the references Stripe lists for the day are compared.

Kinds: `missing_here` (Stripe has the payment, we have no row), `status`, `amount_received`,
`amount_refunded`, `currency`, `livemode`. PaymentIntents still in flight at
Stripe (no handled event has reported them yet: `requires_payment_method` without a failed
attempt, `requires_action`, `processing`, ...) are counted (`in_flight`), not compared; charges
of a PaymentIntent are compared through it, and legacy charges that did not succeed (no handler
records them) are left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

from . import store
from .models import PaymentStatus, Provider

log = logging.getLogger(__name__)

KINDS = ("missing_here", "status", "amount_received", "amount_refunded", "currency", "livemode")
COMPARED = KINDS[1:]  # the columns compared when we hold a row
_EPOCH = dt.datetime(1970, 1, 1)


class DriftError(ValueError):
    """Bad input (a date): refused before anything is asked; the message says what to fix."""


class PaymentPages(Protocol):
    """Stripe's payments created in a window (`providers.stripe_api.StripePayments`)."""

    def payment_intents(
        self, *, created_gte: int, created_lte: int
    ) -> Iterator[list[dict[str, Any]]]: ...

    def charges(self, *, created_gte: int, created_lte: int) -> Iterator[list[dict[str, Any]]]: ...


def parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise DriftError(f"the date must be YYYY-MM-DD, such as 2026-12-07, got {text!r}") from None


def day_bounds(day: dt.date) -> tuple[int, int]:
    """`created` bounds (inclusive, unix seconds) of a UTC day."""
    start = int((dt.datetime.combine(day, dt.time()) - _EPOCH).total_seconds())
    return start, start + 86_399


# --- what our row should say ----------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A Stripe payment as our row should hold it."""

    reference: str
    status: str
    amount_received: int
    amount_refunded: int
    currency: str
    livemode: bool


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _refund_status(received: int, refunded: int, whole: bool) -> str:
    if whole or (refunded and refunded >= received):
        return PaymentStatus.REFUNDED.value
    if refunded:
        return PaymentStatus.PARTIALLY_REFUNDED.value
    return PaymentStatus.SUCCEEDED.value


def expected_of_intent(intent: dict[str, Any]) -> Expected | None:
    """What a PaymentIntent's events leave in our row; None while it is in flight."""
    status = intent.get("status")
    charge = intent.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {}
    received = _int(intent.get("amount_received"))
    refunded = _int(charge.get("amount_refunded"))
    if status == "succeeded":
        ours = _refund_status(received, refunded, charge.get("refunded") is True)
    elif status == "canceled":
        ours = PaymentStatus.CANCELLED.value
    elif status == "requires_payment_method" and intent.get("last_payment_error"):
        ours = PaymentStatus.FAILED.value
    else:
        return None
    return Expected(
        reference=str(intent["id"]),
        status=ours,
        amount_received=received,
        amount_refunded=refunded,
        currency=str(intent.get("currency") or "").lower(),
        livemode=intent.get("livemode") is True,
    )


def expected_of_charge(charge: dict[str, Any]) -> Expected | None:
    """A legacy charge (no PaymentIntent) that succeeded; None for every other charge."""
    if charge.get("payment_intent") or charge.get("status") != "succeeded":
        return None
    captured = charge.get("amount_captured")
    received = _int(captured if captured is not None else charge.get("amount"))
    refunded = _int(charge.get("amount_refunded"))
    return Expected(
        reference=str(charge["id"]),
        status=_refund_status(received, refunded, charge.get("refunded") is True),
        amount_received=received,
        amount_refunded=refunded,
        currency=str(charge.get("currency") or "").lower(),
        livemode=charge.get("livemode") is True,
    )


# --- the comparison ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    reference: str
    kind: str
    ours: str  # what our row says ("" when we have none)
    stripe: str

    def as_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DriftReport:
    day: dt.date
    compared: int  # Stripe payments compared with our rows
    in_flight: int  # listed, not comparable yet (module docstring)
    pages: int
    differences: tuple[Difference, ...]

    @property
    def by_kind(self) -> dict[str, int]:
        """Every kind, zeros included (numbers Dagster plots across partitions)."""
        counts = dict.fromkeys(KINDS, 0)
        for d in self.differences:
            counts[d.kind] += 1
        return counts

    @property
    def drifted(self) -> int:
        """Payments with at least one difference."""
        return len({d.reference for d in self.differences})

    def as_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "compared": self.compared,
            "in_flight": self.in_flight,
            "by_kind": {k: n for k, n in self.by_kind.items() if n},
            "differences": [d.as_json() for d in self.differences],
        }

    def render_text(self, shown: int = 50) -> str:
        lines = [
            f"Drift on {self.day.isoformat()} (UTC): {self.compared} Stripe payments compared "
            f"with ours ({self.in_flight} still in flight at Stripe, not compared)"
        ]
        if not self.differences:
            lines.append("No difference: our payments say what Stripe says.")
            return "\n".join(lines)
        counted = ", ".join(f"{k} {n}" for k, n in self.by_kind.items() if n)
        lines.append(f"{self.drifted} payments differ: {counted}")
        lines.append(f"  {'reference':<32} {'kind':<16} {'ours':>14} {'stripe':>14}")
        for d in self.differences[:shown]:
            lines.append(f"  {d.reference:<32} {d.kind:<16} {d.ours or '-':>14} {d.stripe:>14}")
        if len(self.differences) > shown:
            lines.append(f"  ... {len(self.differences) - shown} more (--json lists every one)")
        lines.append(what_to_do(self.day))
        return "\n".join(lines)


def what_to_do(day: dt.date) -> str:
    """The advice: reconcile from that day on (a missed delivery is the usual cause; a refund
    made later has its event on the day it was made, so the window runs up to now)."""
    since = day.isoformat()
    return (
        f"Recover the missed events first, from that day to now (a later refund's event is dated "
        f"the day it was made): payments-pipeline reconcile stripe --since {since} (or the job "
        f"reconcile_stripe_events with ops: "
        f'{{recovered_webhook_events: {{config: {{since: "{since}"}}}}}}); Stripe keeps events '
        "30 days. What still differs afterwards is a handler or a change made at Stripe without "
        "an event."
    )


def stripe_drift(engine: Engine, source: PaymentPages, day: dt.date) -> DriftReport:
    """Compare our Stripe payments with Stripe's for `day` (module docstring). Raises the
    source's errors (`providers.stripe_api.StripeApiError`)."""
    gte, lte = day_bounds(day)
    expected: list[Expected] = []
    ours: list[dict[str, Any]] = []
    in_flight = pages = 0
    for kind, listing in (
        ("intent", source.payment_intents(created_gte=gte, created_lte=lte)),
        ("charge", source.charges(created_gte=gte, created_lte=lte)),
    ):
        for page in listing:
            pages += 1
            found = []
            for obj in page:
                created = obj.get("created")
                if not isinstance(created, int) or not gte <= created <= lte:
                    continue  # not this day's (an API that ignored the filter)
                wanted = expected_of_intent(obj) if kind == "intent" else expected_of_charge(obj)
                if wanted is None:
                    in_flight += kind == "intent"
                    continue
                found.append(wanted)
            expected.extend(found)
            with engine.connect() as conn:
                held = store.payments_by_reference(
                    conn, provider=Provider.STRIPE, references=[e.reference for e in found]
                )
            ours.extend(_row(p) for p in held)
        log.info("drift %s: %d %ss listed", day, len(expected), kind)
    differences = compare(expected, ours)
    return DriftReport(day, len(expected), in_flight, pages, differences)


def _row(payment: Any) -> dict[str, Any]:
    return {
        "reference": payment.reference,
        "status": payment.status.value,
        "amount_received": payment.amount_received or 0,
        "amount_refunded": payment.amount_refunded or 0,
        "currency": (payment.currency or "").lower(),
        "livemode": bool(payment.livemode),
    }


def compare(expected: list[Expected], ours: list[dict[str, Any]]) -> tuple[Difference, ...]:
    """The differences between Stripe's payments and our rows: a pandas merge on the reference
    (Stripe's side whole: a row of ours Stripe did not list for the day is not compared)."""
    import pandas as pd  # run time only: shaping and joining two tables is what it is for

    columns = ["reference", *COMPARED]
    # Nullable integer and boolean columns: the left merge leaves <NA> in the rows we lack, where
    # plain ones would turn every amount into a float (and round those above 2**53).
    types = {
        "reference": "string",
        "status": "string",
        "amount_received": "Int64",
        "amount_refunded": "Int64",
        "currency": "string",
        "livemode": "boolean",
    }
    stripe_side = pd.DataFrame([dataclasses.asdict(e) for e in expected], columns=columns).astype(
        types
    )
    our_side = pd.DataFrame(ours, columns=columns).astype(types)
    joined = stripe_side.merge(
        our_side, on="reference", how="left", suffixes=("_stripe", "_ours"), indicator=True
    )
    missing = joined["_merge"] == "left_only"
    found: list[Difference] = [
        Difference(str(r), "missing_here", "", str(s))
        for r, s in zip(
            joined.loc[missing, "reference"], joined.loc[missing, "status_stripe"], strict=True
        )
    ]
    held = joined.loc[~missing]
    for column in COMPARED:
        stripe_values, our_values = held[f"{column}_stripe"], held[f"{column}_ours"]
        differs = stripe_values != our_values
        found.extend(
            Difference(str(r), column, _text(o), _text(s))
            for r, o, s in zip(
                held.loc[differs, "reference"],
                our_values[differs],
                stripe_values[differs],
                strict=True,
            )
        )
    order = {k: i for i, k in enumerate(KINDS)}
    return tuple(sorted(found, key=lambda d: (d.reference, order[d.kind])))


def _text(value: object) -> str:
    if isinstance(value, bool) or type(value).__name__ in {"bool", "bool_"}:  # numpy's too
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

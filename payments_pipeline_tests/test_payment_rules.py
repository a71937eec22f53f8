"""The payment rules a payments engineer expects, end to end: signed-off scenarios written by us
to the shapes the providers send, each delivered through the gate and processed, in order, out
of order and duplicated, on every database; each asserts the exact `payments` row.

Shapes: Stripe's API reference (Event, PaymentIntent: `amount`, `amount_received`; Charge:
`amount`, `amount_captured`, `amount_refunded`, `refunded`, `payment_intent`; Checkout Session:
`mode`, `payment_status`, `payment_intent`, `amount_total`) and the real recordings under the
team's fixtures (stripe-ruby-mock, pay-rails); Monetbil's PHP SDK for the notification fields
(`transaction_id`, `status`, `amount`, `currency`, `payment_ref`). See test_real_payloads.py for
the recordings themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.config import Settings
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.models import EventStatus, PaymentStatus, Provider
from payments_pipeline.providers import monetbil, samples

from .helpers import fetch_event, receive_and_dispatch
from .helpers import payment_rows as _rows

P = PaymentStatus
T = 1_700_000_000


@dataclass(frozen=True)
class Delivery:
    provider: Provider
    key: str
    event_type: str
    payload: str


def stripe(
    key: str, event_type: str, *, created: int, live: bool = False, **obj: object
) -> Delivery:
    """A Stripe event whose `data.object` is `samples.stripe_object` with `obj` laid over it."""
    reference = str(obj.pop("reference", "pi_x"))
    body = samples.stripe_event(
        key,
        event_type,
        reference=reference,
        amount=int(obj.pop("amount", 1500)),  # type: ignore[call-overload]
        currency=str(obj.pop("currency", "usd")),
        created=created,
        object_id=obj.pop("object_id", None),  # type: ignore[arg-type]
        object_fields=obj,
        livemode=live,
    )
    return Delivery(Provider.STRIPE, key, event_type, body)


def mb(
    transaction: str, status: str, ref: str, amount: str = "500", currency: str = "XAF"
) -> Delivery:
    fields = {"transaction_id": transaction, "status": status}
    event_type = monetbil.event_type_for(fields)
    body = samples.monetbil_notification(
        transaction, status, payment_ref=ref, amount=amount, currency=currency, sign="s"
    )
    return Delivery(Provider.MONETBIL, monetbil.event_id_for(fields), event_type, body)


Row = tuple[PaymentStatus, int | None, int | None, int, str | None, bool]
Scenario = Callable[[str], tuple[list[Delivery], dict[str, Row]]]


def paid(key: str, pi: str, amount: int, *, created: int) -> Delivery:
    """`payment_intent.succeeded` for the whole `amount`."""
    fields: dict[str, Any] = {"reference": pi, "amount": amount, "amount_received": amount}
    return stripe(key, "payment_intent.succeeded", created=created, **fields)


def refunded(key: str, pi: str, amount_refunded: int, *, created: int) -> Delivery:
    """`charge.refunded` on a 1500 charge of `pi`, refunded in full or in part so far."""
    fields: dict[str, Any] = {"reference": pi, "amount_captured": 1500}
    fields |= {"amount_refunded": amount_refunded, "refunded": amount_refunded == 1500}
    return stripe(key, "charge.refunded", created=created, **fields)


def partial_refund(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    pi = f"pi_partial{s}"
    return [
        paid(f"evt_pi{s}", pi, 1500, created=T),
        refunded(f"evt_re{s}", pi, 500, created=T + 10),
    ], {pi: (P.PARTIALLY_REFUNDED, 1500, 1500, 500, "usd", False)}


def refunded_in_two_steps(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    pi = f"pi_two{s}"
    return [
        paid(f"evt_pi{s}", pi, 1500, created=T),
        refunded(f"evt_re{s}", pi, 500, created=T + 10),
        refunded(f"evt_re2{s}", pi, 1500, created=T + 20),
    ], {pi: (P.REFUNDED, 1500, 1500, 1500, "usd", False)}


def manual_capture(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    pi = f"pi_capture{s}"
    return [
        stripe(
            f"evt_cap{s}",
            "payment_intent.succeeded",
            created=T,
            reference=pi,
            amount=2000,
            amount_received=1500,
            live=True,
        )
    ], {pi: (P.SUCCEEDED, 2000, 1500, 0, "usd", True)}


def subscription_checkout(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    pi = f"pi_invoice{s}"
    return [
        stripe(
            f"evt_cs{s}",
            "checkout.session.completed",
            created=T,
            reference="unused",
            mode="subscription",
            payment_intent=None,
            amount=990,
        ),
        paid(f"evt_inv{s}", pi, 990, created=T + 5),
    ], {pi: (P.SUCCEEDED, 990, 990, 0, "usd", False)}


def setup_session(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    return [
        stripe(
            f"evt_setup{s}",
            "checkout.session.completed",
            created=T,
            object_id=f"cs_setup{s}",
            mode="setup",
            payment_intent=None,
            payment_status="no_payment_required",
            amount_total=None,
        )
    ], {}


def payment_mode_checkout(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    pi = f"pi_checkout{s}"
    return [
        stripe(
            f"evt_sess{s}",
            "checkout.session.completed",
            created=T,
            reference=pi,
            mode="payment",
            amount=990,
        ),
        paid(f"evt_pis{s}", pi, 990, created=T + 1),
    ], {pi: (P.SUCCEEDED, 990, 990, 0, "usd", False)}


def legacy_charge(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    ch = f"ch_legacy{s}"
    common: dict[str, Any] = {"object_id": ch, "payment_intent": None, "amount": 900}
    common["amount_captured"] = 900
    return [
        stripe(f"evt_chs{s}", "charge.succeeded", created=T, **common),
        stripe(
            f"evt_chr{s}",
            "charge.refunded",
            created=T + 9,
            amount_refunded=900,
            refunded=True,
            **common,
        ),
    ], {ch: (P.REFUNDED, 900, 900, 900, "usd", False)}


def monetbil_cancelled_then_paid(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    ref = f"order-cancel{s}"
    return [mb(f"TXA{s}", "-1", ref), mb(f"TXB{s}", "1", ref)], {
        ref: (P.SUCCEEDED, 500, 500, 0, "XAF", True)
    }


def monetbil_failed_then_paid_same_transaction(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    ref = f"order-retry{s}"
    return [mb(f"TXR{s}", "0", ref), mb(f"TXR{s}", "1", ref)], {
        ref: (P.SUCCEEDED, 500, 500, 0, "XAF", True)
    }


def monetbil_major_units(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    usd, xaf = f"order-usd{s}", f"order-xaf{s}"
    return [mb(f"TXU{s}", "1", usd, "10.50", "USD"), mb(f"TXX{s}", "1", xaf, "1 000")], {
        usd: (P.SUCCEEDED, 1050, 1050, 0, "USD", True),
        xaf: (P.SUCCEEDED, 1000, 1000, 0, "XAF", True),
    }


def monetbil_test_mode(s: str) -> tuple[list[Delivery], dict[str, Row]]:
    ref = f"order-test{s}"
    return [mb(f"TXT{s}", "7", ref)], {ref: (P.SUCCEEDED, 500, 500, 0, "XAF", False)}


SCENARIOS: dict[str, Scenario] = {
    f.__name__: f
    for f in (
        partial_refund,
        refunded_in_two_steps,
        manual_capture,
        subscription_checkout,
        setup_session,
        payment_mode_checkout,
        legacy_charge,
        monetbil_cancelled_then_paid,
        monetbil_failed_then_paid_same_transaction,
        monetbil_major_units,
        monetbil_test_mode,
    )
}
ORDERS: dict[str, Callable[[list[Delivery]], Sequence[Delivery]]] = {
    "in_order": lambda events: events,
    "reversed": lambda events: events[::-1],
    "duplicated": lambda events: [e for e in events for _ in range(2)] + events[::-1],
}


def _deliver(engine: Engine, settings: Settings, events: Sequence[Delivery]) -> None:
    dispatcher = InlineDispatcher(engine, settings)
    for e in events:
        receive_and_dispatch(
            engine,
            dispatcher,
            provider=e.provider,
            provider_event_id=e.key,
            event_type=e.event_type,
            payload=e.payload,
            minutes=settings.stuck_requeue_minutes,
        )


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_ends_with_the_exact_row(
    engine: Engine, settings: Settings, scenario: str, order: str
) -> None:
    events, expected = SCENARIOS[scenario](f"_{order}")
    _deliver(engine, settings, ORDERS[order](events))
    assert _rows(engine) == expected
    with engine.connect() as conn:
        states = set(conn.execute(sa.select(store.webhook_events.c.status)).scalars())
    assert states == {EventStatus.PROCESSED.value}  # every event applied or recorded, none dead


def test_an_unreadable_monetbil_amount_is_dead_with_its_reason(
    engine: Engine, settings: Settings
) -> None:
    bad = mb("TXBAD", "1", "order-bad", "12,5")
    _deliver(engine, settings, [bad])
    with engine.connect() as conn:
        event_id = conn.execute(sa.select(store.webhook_events.c.id)).scalar_one()
    event = fetch_event(engine, event_id)
    assert event.status is EventStatus.DEAD
    assert event.last_error == "PayloadError: amount is not a number in major units"
    assert _rows(engine) == {}  # never a payment without its amount

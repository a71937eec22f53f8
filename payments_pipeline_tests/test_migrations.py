"""The migration creates exactly what `store.metadata` describes, on every backend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from payments_pipeline import migrations, store
from payments_pipeline.models import PaymentStatus, Provider
from payments_pipeline.providers import samples

from .conftest import EventFactory
from .helpers import fetch_event


def test_head_matches_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, store.metadata)
    assert diff == []
    assert migrations.current_revision(engine) == migrations.head_revision() == "0002"


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    migrations.upgrade(engine)
    assert migrations.current_revision(engine) == "0002"


def test_timestamps_keep_microseconds(engine: Engine, event_factory: EventFactory) -> None:
    moment = dt.datetime(2026, 11, 23, 12, 34, 56, 789012)
    event_id = event_factory(Provider.STRIPE, dispatched_at=moment)
    assert fetch_event(engine, event_id).dispatched_at == moment


def test_0002_upgrades_existing_payments_in_place(
    engine_at_revision: Callable[[str], Engine],
) -> None:
    """Rows written by 0001's code get what was received, refunded and whether it was real."""
    eng = engine_at_revision("0001")
    now = dt.datetime(2026, 11, 30, 12, 0, 0)
    events = sa.table(
        "webhook_events",
        *(sa.column(c) for c in ("id", "provider", "provider_event_id", "event_type", "status")),
        *(sa.column(c) for c in ("payload", "created_at", "updated_at")),
    )
    payments = sa.table(
        "payments",
        *(sa.column(c) for c in ("provider", "reference", "status", "amount", "currency")),
        *(sa.column(c) for c in ("last_event_id", "created_at", "updated_at")),
    )
    stripe_test = samples.stripe_event("evt_t", reference="pi_t", livemode=False)
    stripe_live = samples.stripe_event("evt_l", reference="pi_l", livemode=True)
    monetbil_test = samples.monetbil_notification("tx_t", "7", payment_ref="order-t")
    with eng.begin() as conn:
        for i, (provider, payload) in enumerate(
            [("stripe", stripe_test), ("stripe", stripe_live), ("monetbil", monetbil_test)],
            start=1,
        ):
            conn.execute(
                events.insert().values(
                    id=i,
                    provider=provider,
                    provider_event_id=f"e{i}",
                    event_type="x",
                    status="processed",
                    payload=payload,
                    created_at=now,
                    updated_at=now,
                )
            )
        rows = [
            ("stripe", "pi_t", "succeeded", 1500, 1),
            ("stripe", "pi_l", "refunded", 2000, 2),
            ("monetbil", "order-t", "succeeded", 500, 3),
            ("stripe", "pi_p", "pending", 700, None),
        ]
        for provider, reference, status, amount, last in rows:
            conn.execute(
                payments.insert().values(
                    provider=provider,
                    reference=reference,
                    status=status,
                    amount=amount,
                    currency="usd",
                    last_event_id=last,
                    created_at=now,
                    updated_at=now,
                )
            )
    migrations.upgrade(eng)
    assert migrations.current_revision(eng) == "0002"
    with eng.connect() as conn:
        found = {
            p.reference: (p.status, p.amount, p.amount_received, p.amount_refunded, p.livemode)
            for p in store.list_payments(conn)
        }
    assert found == {
        "pi_t": (PaymentStatus.SUCCEEDED, 1500, 1500, 0, False),
        "pi_l": (PaymentStatus.REFUNDED, 2000, 2000, 2000, True),
        "order-t": (PaymentStatus.SUCCEEDED, 500, 500, 0, False),
        "pi_p": (PaymentStatus.PENDING, 700, None, 0, True),
    }
    with eng.begin() as conn:  # the wider status column takes the new status
        conn.execute(
            sa.update(store.payments)
            .where(store.payments.c.reference == "pi_l")
            .values(status=PaymentStatus.PARTIALLY_REFUNDED.value)
        )

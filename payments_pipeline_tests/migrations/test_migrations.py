"""The migration creates exactly what `store.metadata` describes, on every backend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from payments_pipeline import migrations, store
from payments_pipeline.models import PaymentStatus, Provider
from payments_pipeline.providers import samples

from ..conftest import EventFactory
from ..helpers import fetch_event

# The columns the upgrade tests write, as every revision so far has had them.
EVENT_COLUMNS = "provider provider_event_id event_type status payload created_at updated_at"
RUN_COLUMNS = "id started_at trigger minutes provider status"


def _old_table(name: str, columns: str) -> sa.TableClause:
    """`name` as an older revision had it, reduced to `columns` (space-separated): the tests write
    the rows an older release wrote, never through today's `store.metadata`."""
    return sa.table(name, *(sa.column(c) for c in columns.split()))


def _old_event(at: dt.datetime, **values: Any) -> dict[str, Any]:
    """A `webhook_events` row as an older release wrote it: a processed Stripe event unless
    `values` say otherwise (the upgrades read only what each test sets)."""
    return {
        "provider": "stripe",
        "event_type": "x",
        "status": "processed",
        "payload": "{}",
        "created_at": at,
        "updated_at": at,
        **values,
    }


def test_head_matches_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, store.metadata)
    assert diff == []
    assert migrations.current_revision(engine) == migrations.head_revision() == "0005"


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    migrations.upgrade(engine)
    assert migrations.current_revision(engine) == "0005"


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
    events = _old_table("webhook_events", f"id {EVENT_COLUMNS}")
    payments = _old_table(
        "payments",
        "provider reference status amount currency last_event_id created_at updated_at",
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
                    _old_event(
                        now, id=i, provider=provider, provider_event_id=f"e{i}", payload=payload
                    )
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
    migrations.upgrade(eng, "0002")
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


def test_0003_gives_the_queue_of_the_old_rule_its_new_form(
    engine_at_revision: Callable[[str], Engine],
) -> None:
    """Events handed on since their last attempt began, by the old rule's timestamps, stay
    startable; every other row keeps its attempt's start."""
    eng = engine_at_revision("0002")
    t0 = dt.datetime(2026, 11, 30, 12, 0, 0)
    later, earlier = t0 + dt.timedelta(minutes=5), t0 - dt.timedelta(minutes=5)
    rows = {  # key: (status, dispatched_at, processing_started_at)
        "failed_redispatched": ("failed", later, t0),
        "received_redispatched": ("received", later, t0),
        "failed_waiting": ("failed", earlier, t0),
        "failed_never_dispatched": ("failed", None, t0),
        "processing": ("processing", later, t0),
        "dead": ("dead", later, t0),
        "new": ("received", t0, None),
    }
    events = _old_table(
        "webhook_events",
        f"{EVENT_COLUMNS} attempts attempts_base dispatched_at processing_started_at",
    )
    with eng.begin() as conn:
        for key, (status, dispatched, started) in rows.items():
            conn.execute(
                events.insert().values(
                    _old_event(
                        t0, provider_event_id=key, status=status, attempts=1, attempts_base=0
                    )
                    | {"dispatched_at": dispatched, "processing_started_at": started}
                )
            )
    migrations.upgrade(eng, "0003")
    assert migrations.current_revision(eng) == "0003"
    with eng.connect() as conn:
        found = {
            key: started
            for key, started in conn.execute(
                sa.select(store.E.provider_event_id, store.E.processing_started_at)
            )
        }
    assert found == {
        "failed_redispatched": None,
        "received_redispatched": None,
        "failed_waiting": t0,
        "failed_never_dispatched": t0,
        "processing": t0,
        "dead": t0,
        "new": None,
    }


def test_0004_says_how_events_came_and_what_each_audit_row_was(
    engine_at_revision: Callable[[str], Engine],
) -> None:
    """Existing events were deliveries; existing audit rows are sweeps, except the replays
    (told apart by their `replay` audit rows); no row has a window."""
    eng = engine_at_revision("0003")
    t0 = dt.datetime(2026, 12, 1, 12, 0, 0)
    events = _old_table("webhook_events", EVENT_COLUMNS)
    runs = _old_table("sweep_runs", RUN_COLUMNS)
    audited = _old_table("sweep_events", "sweep_id event_id reason outcome")
    with eng.begin() as conn:
        conn.execute(events.insert().values(_old_event(t0, provider_event_id="evt_old")))
        for run_id in (1, 2, 3):
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    started_at=t0,
                    trigger="cli",
                    minutes=10,
                    provider="all",
                    status="succeeded",
                )
            )
        conn.execute(
            audited.insert(),
            [
                {
                    "sweep_id": 1,
                    "event_id": 1,
                    "reason": "dispatched_at_null",
                    "outcome": "dispatched",
                },
                {"sweep_id": 2, "event_id": 1, "reason": "replay", "outcome": "dispatched"},
            ],
        )
    migrations.upgrade(eng, "0004")
    assert migrations.current_revision(eng) == "0004"
    with eng.connect() as conn:
        assert conn.execute(sa.select(store.E.received_via)).scalars().all() == ["webhook"]
        found = conn.execute(
            sa.select(
                store.sweep_runs.c.id,
                store.sweep_runs.c.kind,
                store.sweep_runs.c.window_start,
                store.sweep_runs.c.window_end,
            ).order_by(store.sweep_runs.c.id)
        ).all()
    assert [tuple(r) for r in found] == [
        (1, "sweep", None, None),
        (2, "replay", None, None),
        (3, "sweep", None, None),
    ]


def test_0005_keeps_a_note_per_audit_row_and_a_downgrade_makes_dismissed_events_dead(
    engine_at_revision: Callable[[str], Engine],
) -> None:
    """Existing audit rows get no note; the status column takes `dismissed`; going back to 0004
    turns dismissed events into `dead`, the nearest status the older code knows."""
    eng = engine_at_revision("0004")
    t0 = dt.datetime(2026, 12, 7, 12, 0, 0)
    runs = _old_table("sweep_runs", RUN_COLUMNS)
    with eng.begin() as conn:
        conn.execute(
            runs.insert().values(
                id=1, started_at=t0, trigger="cli", minutes=10, provider="all", status="succeeded"
            )
        )
    migrations.upgrade(eng)
    assert migrations.current_revision(eng) == "0005"
    with eng.begin() as conn:
        assert conn.execute(sa.select(store.sweep_runs.c.note)).scalars().all() == [None]
        conn.execute(
            sa.insert(store.sweep_runs).values(
                id=2,
                started_at=t0,
                trigger="cli",
                minutes=10,
                provider="stripe",
                status="succeeded",
                kind="dismiss",
                note="n" * 500,
            )
        )
        conn.execute(
            sa.insert(store.webhook_events).values(
                provider="stripe",
                provider_event_id="evt_settled",
                event_type="x",
                status="dismissed",
                payload="{}",
                created_at=t0,
                updated_at=t0,
            )
        )
        notes = conn.execute(
            sa.select(store.sweep_runs.c.note).order_by(store.sweep_runs.c.id)
        ).scalars()
        assert list(notes) == [None, "n" * 500]
    cfg = migrations.alembic_config()
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    with eng.connect() as conn:
        assert conn.execute(sa.select(store.E.status)).scalars().all() == ["dead"]
        assert "note" not in {c["name"] for c in sa.inspect(conn).get_columns("sweep_runs")}

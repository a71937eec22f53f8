"""Monetbil reconciliation: checkPayment asked about each transaction (a fake shaped like
Monetbil's answer); a final status becomes the notification it stands for, through the gate."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import gate, store
from payments_pipeline.dispatch import InlineDispatcher
from payments_pipeline.models import (
    MISSED_DELIVERY,
    EventStatus,
    PaymentStatus,
    Provider,
    ReceivedVia,
    SweepKind,
)
from payments_pipeline.providers import samples
from payments_pipeline.providers.monetbil_check import check_payment
from payments_pipeline.reconcile import (
    MonetbilOutcome,
    ProviderUnavailable,
    ReconcileError,
    reconcile_monetbil,
)

from ..fakes.monetbil_check_api import FakeCheckPayment
from ..helpers import make_settings, payment_rows


def _run(engine: Engine, fake: FakeCheckPayment, ids: list[str], **options: object):  # type: ignore[no-untyped-def]
    settings = make_settings(engine)
    return reconcile_monetbil(
        engine,
        lambda tx: check_payment(fake.url, tx, timeout=5),
        InlineDispatcher(engine, settings),
        ids,
        minutes=10,
        **options,  # type: ignore[arg-type]
    )


def _events(engine: Engine) -> list[tuple[str, str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                store.E.provider_event_id, store.E.event_type, store.E.status, store.E.received_via
            ).order_by(store.E.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _nothing_written(engine: Engine) -> None:
    """No audit row, no event: what a dry run or a failed ask leaves."""
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.sweep_runs)).scalar() == 0
    assert _events(engine) == []


def test_final_statuses_become_their_notifications_and_apply_once(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    monetbil_check_api.add("tx_paid", 1, payment_ref="order-1", amount="1 000", currency="XAF")
    monetbil_check_api.add("tx_test", 1, testmode=1, payment_ref="order-2", amount=250)
    monetbil_check_api.add("tx_failed", 0, payment_ref="order-3", amount=300)
    result = _run(engine, monetbil_check_api, ["tx_paid", "tx_test", "tx_failed", "tx_paid"])
    assert [r.outcome for r in result.resolutions] == [MonetbilOutcome.RECOVERED] * 3
    assert _events(engine) == [
        ("tx_paid:1", "payment.success", "processed", "api"),
        ("tx_test:7", "payment.success", "processed", "api"),
        ("tx_failed:0", "payment.failed", "processed", "api"),
    ]
    rows = payment_rows(engine)
    assert rows["order-1"][:5] == (PaymentStatus.SUCCEEDED, 1000, 1000, 0, "XAF")
    assert rows["order-1"][5] is True and rows["order-2"][5] is False
    assert rows["order-3"][0] is PaymentStatus.FAILED
    with engine.connect() as conn:
        run = conn.execute(sa.select(store.sweep_runs)).one()
        audited = conn.execute(sa.select(store.sweep_events.c.reason)).scalars().all()
    assert (run.kind, run.provider, run.status, run.scanned, run.dispatched) == (
        SweepKind.RECONCILE.value,
        "monetbil",
        "succeeded",
        3,
        3,
    )
    assert run.window_start is None and audited == [MISSED_DELIVERY] * 3

    again = _run(engine, monetbil_check_api, ["tx_paid", "tx_test", "tx_failed"])
    assert [r.outcome for r in again.resolutions] == [MonetbilOutcome.KNOWN] * 3
    assert len(_events(engine)) == 3 and payment_rows(engine) == rows


def test_a_notification_we_already_received_is_known(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    payload = samples.monetbil_notification("tx_1", "1", payment_ref="order-1", amount="500")
    gate.receive(
        engine,
        provider=Provider.MONETBIL,
        provider_event_id="tx_1:1",
        event_type="payment.success",
        payload=payload,
        minutes=10,
    )
    monetbil_check_api.add("tx_1", 1, payment_ref="order-1", amount=500)
    result = _run(engine, monetbil_check_api, ["tx_1"])
    assert result.resolutions[0].outcome == MonetbilOutcome.KNOWN
    assert [e[3] for e in _events(engine)] == [ReceivedVia.WEBHOOK.value]


def test_answers_lacking_what_a_payment_needs_are_unresolved_and_store_nothing(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    monetbil_check_api.add("tx_noref", 1, payment_ref=None)
    monetbil_check_api.add("tx_noamount", 1, amount=None)
    monetbil_check_api.add("tx_pending", 3)
    monetbil_check_api.add("tx_badcurrency", 1, currency="EURO")
    result = _run(
        engine,
        monetbil_check_api,
        ["tx_noref", "tx_noamount", "tx_pending", "tx_unknown", "tx_badcurrency"],
    )
    why = {r.transaction_id: r.why for r in result.resolutions}
    assert all(r.outcome == MonetbilOutcome.UNRESOLVED for r in result.resolutions)
    assert why == {
        "tx_noref": "the answer names no payment_ref",
        "tx_noamount": "the answer has no amount",
        "tx_pending": "status 3 is not a final Monetbil status",
        "tx_unknown": "checkPayment knows no such transaction",
        "tx_badcurrency": "checkPayment answer has an unreadable currency",
    }
    assert _events(engine) == []


def test_dry_run_asks_and_writes_nothing(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    monetbil_check_api.add("tx_1", 1, amount="10.50", currency="USD")
    result = _run(engine, monetbil_check_api, ["tx_1"], dry_run=True)
    assert result.sweep_id is None
    assert result.resolutions[0].outcome == MonetbilOutcome.WOULD_RECOVER
    assert result.resolutions[0].provider_event_id == "tx_1:1"
    _nothing_written(engine)


def test_an_unreachable_monetbil_check_api_writes_nothing(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    monetbil_check_api.add("tx_1", 1)
    monetbil_check_api.answer = (503, b"busy")
    with pytest.raises(ProviderUnavailable, match="checkPayment answered HTTP 503"):
        _run(engine, monetbil_check_api, ["tx_1", "tx_2"])
    _nothing_written(engine)


def test_bad_transaction_ids_are_refused(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    for ids in (["x" * 300], ["  "], ["tx\x001"], []):
        with pytest.raises(ReconcileError):
            _run(engine, monetbil_check_api, ids)
    assert monetbil_check_api.requests == 0


def test_the_recovered_event_is_a_received_notification_until_processed(
    engine: Engine, monetbil_check_api: FakeCheckPayment
) -> None:
    """Through the gate: with no processing engine, the row waits claimed, as a delivery does."""

    class Lost:
        def dispatch(self, event: object) -> None:
            raise RuntimeError("broker down")

    monetbil_check_api.add("tx_1", -1, payment_ref="order-9", amount=100)
    result = reconcile_monetbil(
        engine,
        lambda tx: check_payment(monetbil_check_api.url, tx, timeout=5),
        Lost(),
        ["tx_1"],
        minutes=10,
    )
    assert result.resolutions[0].dispatch is not None
    assert result.resolutions[0].dispatch.value == "dispatch_failed"
    assert _events(engine) == [("tx_1:-1", "payment.cancelled", EventStatus.RECEIVED.value, "api")]

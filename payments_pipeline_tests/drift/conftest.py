"""Fixtures for the drift tests: our fake Stripe PaymentIntents and Charges API on 127.0.0.1,
stopped at teardown, and the official SDK's client on a fake (`stripe_sdk`, shared with the
reconciliation tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..fakes.stripe_payments_api import FakeStripePaymentsAPI
from ..reconcile.conftest import StripeClientFactory, stripe_sdk

__all__ = ["StripeClientFactory", "stripe_payments_api", "stripe_sdk"]


@pytest.fixture
def stripe_payments_api() -> Iterator[FakeStripePaymentsAPI]:
    """Our fake `GET /v1/payment_intents` and `GET /v1/charges`, empty; `.add_payment_intent`,
    `.add_charge`, `.refund`, `.event_for`, `.url`, `.api_key`."""
    with FakeStripePaymentsAPI() as api:
        yield api

"""The fakes as pytest fixtures, for every test folder (a plugin of the root conftest): each server
on 127.0.0.1, empty, stopped at teardown; the official SDK's client on a fake; the SDK's retries
without their sleep; our receiver in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import stripe
from sqlalchemy import Engine

from .monetbil_check_api import FakeCheckPayment
from .stripe_events_api import FakeStripeEventsAPI
from .stripe_payments_api import FakeStripePaymentsAPI

StripeClientFactory = Callable[..., stripe.StripeClient]


@pytest.fixture
def stripe_events_api() -> Iterator[FakeStripeEventsAPI]:
    """Our fake `GET /v1/events`, empty; `.add(...)` events, `.url`, `.api_key`."""
    with FakeStripeEventsAPI() as api:
        yield api


@pytest.fixture
def stripe_payments_api() -> Iterator[FakeStripePaymentsAPI]:
    """Our fake `GET /v1/payment_intents` and `GET /v1/charges`, empty; `.add_payment_intent`,
    `.add_charge`, `.refund`, `.event_for`, `.url`, `.api_key`."""
    with FakeStripePaymentsAPI() as api:
        yield api


@pytest.fixture
def monetbil_check_api() -> Iterator[FakeCheckPayment]:
    """A fake Monetbil checkPayment at `.url`; `.add(...)` transactions."""
    with FakeCheckPayment() as fake:
        yield fake


@pytest.fixture
def stripe_sdk() -> Iterator[StripeClientFactory]:
    """`stripe_sdk(url, api_key, **options)`: the official SDK's client on a fake's `url`, as
    `StripeClient(api_key, base_addresses={"api": url}, **options)`; its HTTP session is closed
    at teardown (an unclosed one is a ResourceWarning, an error here)."""
    sessions: list[requests.Session] = []

    def make(url: str, api_key: str, **options: Any) -> stripe.StripeClient:
        session = requests.Session()
        sessions.append(session)
        http_client = stripe.RequestsClient(session=session)
        return stripe.StripeClient(
            api_key, base_addresses={"api": url}, http_client=http_client, **options
        )

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def sdk_retries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The official SDK's own retries, recorded and without their sleep (>= 0.5 s each): the
    retry count the SDK reached, one entry per retry."""
    retries: list[int] = []

    def no_sleep(self: Any, num_retries: int) -> float:
        retries.append(num_retries)
        return 0.0

    monkeypatch.setattr(stripe._http_client.HTTPClient, "_sleep_time_seconds", no_sleep)
    return retries


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Any]:
    """Our receiver in a thread on `engine` (`drift.support.Receiver`: `deliver` POSTs an event
    signed and waits until it was processed)."""
    from ..drift.support import receiving

    with receiving(engine) as running:
        yield running

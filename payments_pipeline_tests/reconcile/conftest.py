"""Fixtures for the reconciliation tests: localstripe, our fake Events API, a webhook sink, a fake
Monetbil checkPayment; each on 127.0.0.1, each stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from ..fakes.localstripe_process import LocalStripe
from ..fakes.monetbil_check_api import FakeCheckPayment
from ..fakes.stripe_events_api import FakeStripeEventsAPI
from ..fakes.webhook_sink import WebhookSink


@pytest.fixture
def localstripe(tmp_path: Path) -> Iterator[LocalStripe]:
    """A fresh localstripe process (its own empty store); log in tmp_path/localstripe.log."""
    with LocalStripe(log=tmp_path / "localstripe.log") as server:
        yield server


@pytest.fixture
def stripe_events_api() -> Iterator[FakeStripeEventsAPI]:
    """Our fake `GET /v1/events`, empty; `.add(...)` events, `.url`, `.api_key`."""
    with FakeStripeEventsAPI() as api:
        yield api


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """An endpoint that records what is POSTed to `.url` (answers `.status`, 200)."""
    with WebhookSink() as sink:
        yield sink


@pytest.fixture
def monetbil_check_api() -> Iterator[FakeCheckPayment]:
    """A fake Monetbil checkPayment at `.url`; `.add(...)` transactions."""
    with FakeCheckPayment() as fake:
        yield fake


StripeClientFactory = Callable[..., stripe.StripeClient]


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

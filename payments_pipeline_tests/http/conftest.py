"""Fixtures for the receiver: the app on the `engine` fixture's database (all three backends)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import Engine

from payments_pipeline.config import Settings
from payments_pipeline.dispatch import Dispatcher
from payments_pipeline.http.app import create_app

from ..helpers import make_settings
from .support import MONETBIL_SECRET, STRIPE_OLD_SECRET, STRIPE_SECRET, Client

ClientFactory = Callable[..., Client]


@pytest.fixture
def receiver_settings(engine: Engine) -> Settings:
    return make_settings(
        engine,
        stripe_webhook_secrets=(STRIPE_SECRET, STRIPE_OLD_SECRET),
        monetbil_service_secret=MONETBIL_SECRET,
        dispatch_threads=2,
    )


@pytest.fixture
def make_client(engine: Engine, receiver_settings: Settings) -> Iterator[ClientFactory]:
    """Build an app (settings overridable, dispatcher optional) and a client running it."""
    with ExitStack() as stack:

        def make(
            dispatcher: Dispatcher | None = None, *, db: Engine | None = None, **overrides: Any
        ) -> Client:
            settings = dataclasses.replace(receiver_settings, **overrides)
            app = create_app(settings, engine=db or engine, dispatcher=dispatcher)
            return stack.enter_context(Client(app))

        yield make


@pytest.fixture
def client(make_client: ClientFactory) -> Client:
    """The app with its default dispatcher: claimed events are processed in process."""
    return make_client()

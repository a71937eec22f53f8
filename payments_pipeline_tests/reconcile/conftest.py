"""Fixtures for the reconciliation tests: localstripe and a webhook sink, each on 127.0.0.1, each
stopped at teardown (the fake APIs are `fakes/fixtures.py`'s, for every folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..fakes.localstripe_process import LocalStripe
from ..fakes.webhook_sink import WebhookSink


@pytest.fixture
def localstripe(tmp_path: Path) -> Iterator[LocalStripe]:
    """A fresh localstripe process (its own empty store); log in tmp_path/localstripe.log."""
    with LocalStripe(log=tmp_path / "localstripe.log") as server:
        yield server


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """An endpoint that records what is POSTed to `.url` (answers `.status`, 200)."""
    with WebhookSink() as sink:
        yield sink

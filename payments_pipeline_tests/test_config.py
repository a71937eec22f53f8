"""Settings from the environment: defaults, and one clear error for a bad value."""

from __future__ import annotations

import pytest

from payments_pipeline.config import ConfigError, load_settings


def test_receiver_thread_defaults() -> None:
    settings = load_settings({})
    assert (settings.gate_threads, settings.dispatch_threads) == (4, 4)


def test_gate_threads_from_the_environment() -> None:
    assert load_settings({"PAYMENTS_GATE_THREADS": " 16 "}).gate_threads == 16


@pytest.mark.parametrize(
    ("raw", "message"),
    [("0", "at least 1, got 0"), ("-2", "at least 1"), ("four", "whole number, got 'four'")],
)
def test_bad_gate_threads_is_one_clear_error(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"PAYMENTS_GATE_THREADS must be .*{message}"):
        load_settings({"PAYMENTS_GATE_THREADS": raw})

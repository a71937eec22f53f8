"""Settings from the environment: defaults, and one clear error for a bad value."""

from __future__ import annotations

import dataclasses

import pytest

from payments_pipeline.config import DEFAULTS, ConfigError, load_settings
from payments_pipeline.models import DispatchMode
from payments_pipeline.sweep import SweepParams


def test_an_empty_environment_reads_as_every_default() -> None:
    settings = load_settings({})
    assert settings.database_url.endswith("/payments.sqlite3")
    assert dataclasses.replace(settings, database_url="") == DEFAULTS
    assert (DEFAULTS.stuck_requeue_minutes, DEFAULTS.max_age_days) == (10, 7)


def test_a_sweeps_defaults_are_the_settings_defaults() -> None:
    assert SweepParams() == SweepParams.from_settings(DEFAULTS)


def test_receiver_thread_defaults() -> None:
    settings = load_settings({})
    assert (settings.gate_threads, settings.dispatch_threads) == (4, 4)


def test_the_receivers_coalescing_wait_from_the_environment() -> None:
    assert load_settings({}).dispatch_coalesce_ms == 5
    assert load_settings({"PAYMENTS_DISPATCH_COALESCE_MS": "0"}).dispatch_coalesce_ms == 0
    assert load_settings({"PAYMENTS_DISPATCH_COALESCE_MS": "20"}).dispatch_coalesce_ms == 20
    with pytest.raises(ConfigError, match="PAYMENTS_DISPATCH_COALESCE_MS must be at least 0"):
        load_settings({"PAYMENTS_DISPATCH_COALESCE_MS": "-1"})


def test_gate_threads_from_the_environment() -> None:
    assert load_settings({"PAYMENTS_GATE_THREADS": " 16 "}).gate_threads == 16


@pytest.mark.parametrize(
    ("raw", "message"),
    [("0", "at least 1, got 0"), ("-2", "at least 1"), ("four", "whole number, got 'four'")],
)
def test_bad_gate_threads_is_one_clear_error(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"PAYMENTS_GATE_THREADS must be .*{message}"):
        load_settings({"PAYMENTS_GATE_THREADS": raw})


def test_dispatch_engine_is_one_setting_with_the_receivers_override() -> None:
    assert load_settings({}).dispatch is DispatchMode.INLINE
    assert load_settings({}).receiver_mode is DispatchMode.INLINE
    table = load_settings({"PAYMENTS_DISPATCH": "table"})
    assert table.dispatch is DispatchMode.TABLE and table.receiver_mode is DispatchMode.TABLE
    both = load_settings({"PAYMENTS_DISPATCH": "table", "PAYMENTS_RECEIVER_DISPATCH": "none"})
    assert both.dispatch is DispatchMode.TABLE and both.receiver_mode is DispatchMode.NONE


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PAYMENTS_DISPATCH", "none"),
        ("PAYMENTS_DISPATCH", "kafka"),
        ("PAYMENTS_DISPATCH", "queue"),  # no alias of `table`
        ("PAYMENTS_RECEIVER_DISPATCH", "x"),
        ("PAYMENTS_RECEIVER_DISPATCH", "queue"),
    ],
)
def test_unknown_dispatch_engine_is_one_clear_error(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be one of .*got '{raw}'"):
        load_settings({name: raw})


def test_celery_queue_name_is_checked() -> None:
    assert load_settings({}).celery_queue == "payments_pipeline"
    assert load_settings({"PAYMENTS_CELERY_QUEUE": "pp.eu-1"}).celery_queue == "pp.eu-1"
    with pytest.raises(ConfigError, match="PAYMENTS_CELERY_QUEUE"):
        load_settings({"PAYMENTS_CELERY_QUEUE": "a b"})

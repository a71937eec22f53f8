"""The `dispatcher` resource: its mode comes through `dg.EnvVar("PAYMENTS_DISPATCH")`, resolved
where the run executes, inline when the code location loads without it."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline.config import ConfigError, load_settings
from payments_pipeline.defs.resources import PaymentsDispatcher, build_resources, sweep_run_config
from payments_pipeline.dispatch import InlineDispatcher, TableDispatcher
from payments_pipeline.models import DispatchMode, Provider

from ..conftest import EventFactory
from .conftest import execute_sweep, sweep_rows


def _resolved(resource: object) -> PaymentsDispatcher:
    """The resource as a run gets it (its config, env vars included, resolved now)."""
    with dg.build_resources({"dispatcher": resource}) as resources:
        dispatcher: PaymentsDispatcher = resources.dispatcher
        return dispatcher


def test_the_mode_is_read_where_the_run_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_DISPATCH", "table")
    resource = build_resources(load_settings())["dispatcher"]
    assert _resolved(resource).dispatch_mode is DispatchMode.TABLE
    monkeypatch.setenv("PAYMENTS_DISPATCH", "celery")  # changed before the next run starts
    assert _resolved(resource).dispatch_mode is DispatchMode.CELERY


def test_without_the_variable_the_mode_is_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYMENTS_DISPATCH", raising=False)
    resource = build_resources(load_settings())["dispatcher"]
    assert _resolved(resource).dispatch_mode is DispatchMode.INLINE


def test_a_mode_no_sweep_may_use_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="PAYMENTS_DISPATCH must be one of inline, table, celery"):
        PaymentsDispatcher(mode="none").dispatch_mode  # noqa: B018


@pytest.mark.parametrize("backend", ["sqlite"])
def test_each_build_is_a_dispatcher_of_its_own_and_only_inline_counts_outcomes(
    engine: Engine,
) -> None:
    settings = load_settings({})
    first = PaymentsDispatcher(mode="inline").build(engine, settings)
    second = PaymentsDispatcher(mode="inline").build(engine, settings)
    assert isinstance(first, InlineDispatcher) and first is not second
    assert first.outcomes() == {}
    table = PaymentsDispatcher(mode="table").build(engine, settings)
    assert table.outcomes() is None and isinstance(table, TableDispatcher)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_run_naming_a_mode_no_sweep_may_use_fails_its_dispatch_step_and_its_row(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.STRIPE)
    config = sweep_run_config(minutes=10, provider="all")
    config["resources"]["dispatcher"] = {"config": {"mode": "none"}}
    result = execute_sweep(instance, run_config=config)
    assert not result.success
    (row,) = sweep_rows(db_env)
    assert row.status == "failed" and "PAYMENTS_DISPATCH must be one of" in row.error

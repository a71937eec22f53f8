"""The asset checks pass on a clean sweep and fail, with the right severity, when they should."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline.models import EventStatus, Provider

from ..conftest import EventFactory
from ..helpers import ago, fetch_event
from .conftest import UnreachableDispatcher, execute_sweep

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_clean_sweep_passes_every_check(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.STRIPE)
    checks = _checks(execute_sweep(instance))
    assert set(checks) == {
        "no_expired_stuck_events",
        "no_dead_events",
        "every_claim_dispatched",
        "backlog_keeps_up",
    }
    assert all(c.passed for c in checks.values())


def test_expired_stuck_events_fail_with_error(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.MONETBIL, created_at=ago(days=8))
    event_factory(Provider.MONETBIL, created_at=ago(days=30), dispatched_at=ago(days=30))
    result = execute_sweep(instance)
    assert result.success  # a failed check flags; the sweep itself did its job
    check = _checks(result)["no_expired_stuck_events"]
    assert not check.passed and check.severity is dg.AssetCheckSeverity.ERROR
    assert check.metadata["expired"] == dg.TextMetadataValue("2")  # the sweep's providers: text
    assert check.metadata["expired_monetbil"] == dg.IntMetadataValue(2)


def test_dead_events_warn_and_are_counted_per_provider(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_factory(Provider.STRIPE, status=EventStatus.DEAD, attempts=10)
    event_factory(Provider.MONETBIL, status=EventStatus.DEAD, attempts=10)
    checks = _checks(execute_sweep(instance, provider="stripe"))
    dead = checks["no_dead_events"]
    assert not dead.passed and dead.severity is dg.AssetCheckSeverity.WARN
    assert dead.metadata["dead"] == dg.TextMetadataValue("1")  # the sweep's providers only
    assert "payments-pipeline replay" in (dead.description or "")
    assert checks["no_expired_stuck_events"].passed and checks["every_claim_dispatched"].passed


def test_a_claim_that_was_not_dispatched_fails_with_error(
    db_env: Engine, event_factory: EventFactory, instance: dg.DagsterInstance
) -> None:
    event_id = event_factory(Provider.STRIPE)
    result = execute_sweep(instance, resources={"dispatcher": UnreachableDispatcher()})
    assert result.success
    check = _checks(result)["every_claim_dispatched"]
    assert not check.passed and check.severity is dg.AssetCheckSeverity.ERROR
    assert check.metadata["dispatch_failed"] == dg.TextMetadataValue("1")
    assert str(event_id) in (check.description or "")
    claimed = fetch_event(db_env, event_id)  # claimed, so a later sweep finds it as dispatch_lost
    assert claimed.dispatched_at is not None and claimed.status is EventStatus.RECEIVED

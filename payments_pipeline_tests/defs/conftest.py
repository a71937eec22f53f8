"""Fixtures for the Dagster code location: instances, a database URL in the environment, a sweep
step made to fail, a dispatcher resource that fails, and one helper that runs the job in process
the way every door does (run config, tags)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.config import Settings
from payments_pipeline.definitions import defs
from payments_pipeline.defs import assets
from payments_pipeline.defs.launch import prepare_demo_home
from payments_pipeline.defs.resources import PaymentsDispatcher, sweep_run_config
from payments_pipeline.dispatch import Dispatcher
from payments_pipeline.models import EventRef, EventStatus, Provider

from ..conftest import EventFactory
from ..helpers import monetbil_payload

# Environment the code location reads; each test starts from the documented defaults.
_ENV = (
    "DAGSTER_HOME",
    "PAYMENTS_DATABASE_URL",
    "PAYMENTS_STUCK_REQUEUE_ENABLED",
    "PAYMENTS_STUCK_REQUEUE_MINUTES",
    "PAYMENTS_PROCESSING_TIMEOUT_MINUTES",
    "PAYMENTS_MAX_ATTEMPTS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def db_env(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """`engine`'s database as PAYMENTS_DATABASE_URL, which `payments_db` reads through EnvVar."""
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", url_of(engine))
    return engine


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """In memory: fast, for runs whose instance is not what the test is about."""
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture(scope="session")
def _persistent_instance(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dg.DagsterInstance]:
    folder = str(tmp_path_factory.mktemp("instance"))
    with dg.instance_for_test(temp_dir=folder, set_dagster_home=False) as inst:
        yield inst


@pytest.fixture
def persistent_instance(_persistent_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """SQLite-backed (schedule and sensor contexts need a persistent instance), emptied of runs
    for each test: creating its storage costs about a second, so the session shares one."""
    _persistent_instance.wipe()
    return _persistent_instance


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    """A persistent (SQLite) Dagster home with the shipped instance config."""
    return prepare_demo_home(tmp_path)


def execute_sweep(
    instance: dg.DagsterInstance,
    *,
    provider: str = "all",
    minutes: int = 10,
    tags: dict[str, str] | None = None,
    run_config: dict[str, object] | None = None,
    resources: dict[str, object] | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of `requeue_stuck_webhooks`, as a launch with a run-config override would do;
    `resources` replace the code location's (a fake dispatcher)."""
    job = defs.resolve_job_def("requeue_stuck_webhooks")
    return job.execute_in_process(
        run_config=run_config or sweep_run_config(minutes=minutes, provider=provider),
        instance=instance,
        tags=tags,
        resources=resources,
        raise_on_error=False,
    )


BreakStep = Callable[[str, str], None]


@pytest.fixture
def break_sweep_step(event_factory: EventFactory, monkeypatch: pytest.MonkeyPatch) -> BreakStep:
    """`break_sweep_step(core_call, message)`: one stuck event to sweep, and the core function
    the sweep's assets call as `core_call` (`claim_candidates`, `finish_sweep`, ...) raising
    `RuntimeError(message)`: the step that calls it fails."""

    def breaking(core_call: str, message: str) -> None:
        def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(message)

        event_factory(Provider.STRIPE)
        monkeypatch.setattr(assets, core_call, broken)

    return breaking


class _Unreachable:
    """A core dispatcher whose broker is down: every hand-off raises."""

    def __init__(self, error: str) -> None:
        self.error = error

    def dispatch(self, event: EventRef) -> None:
        raise ConnectionError(self.error)

    def outcomes(self) -> None:
        return None


class UnreachableDispatcher(PaymentsDispatcher):
    """The `dispatcher` resource of a deployment whose broker is down: each hand-off fails (the
    claims stay; a later sweep finds them as `dispatch_lost`)."""

    error: str = "broker unreachable"

    def build(self, engine: Engine, settings: Settings) -> Dispatcher:
        return _Unreachable(self.error)


def execute_job(
    instance: dg.DagsterInstance, job_name: str, run_config: dict[str, Any], **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """One in-process run of the code location's `job_name` (`kwargs`: resources, tags, ...)."""
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(run_config=run_config, instance=instance, **kwargs)


def assert_refused_before_a_run(
    engine: Engine,
    instance: dg.DagsterInstance,
    job_name: str,
    run_config: dict[str, Any],
    message: str,
) -> None:
    """Launching `job_name` with `run_config` is refused with `message`: no run, no audit row."""
    with pytest.raises(dg.DagsterInvalidConfigError, match=re.escape(message)):
        execute_job(instance, job_name, run_config)
    assert sweep_rows(engine) == []
    assert instance.get_runs() == []


def dead_for_good(event_factory: EventFactory, n: int) -> list[int]:
    """`n` dead Monetbil events whose notification is malformed (`amount=abc`): a replay takes
    them round and they die again."""
    return [
        event_factory(
            Provider.MONETBIL,
            status=EventStatus.DEAD,
            attempts=1,
            payload=monetbil_payload(f"tx_bad{i}", amount="abc"),
        )
        for i in range(n)
    ]


def sensor_tick(engine: Engine, instance: dg.DagsterInstance, cursor: str | None) -> Any:
    """One evaluation of `webhook_events_sensor`, as the daemon runs it: the resource is opened
    and closed around it."""
    from payments_pipeline.defs.resources import PaymentsDatabase

    sensor = defs.resolve_sensor_def("webhook_events_sensor")
    resources = {"payments_db": PaymentsDatabase(url=url_of(engine))}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor.evaluate_tick(context)


def sweep_rows(engine: Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(store.sweep_runs).order_by(store.sweep_runs.c.id)))


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, job: str) -> str:
    """A run record in `status`, as the UI, the daemon or another CLI would have left it."""
    # A queued run must name the code location it will be launched from. Dagster builds that
    # origin only in the webserver and the daemon (no public constructor): it is read here in
    # the form the run storage keeps it, which Dagster reads back across versions (its names
    # are still those of Dagster 0.x).
    origin: Any = dg.deserialize_value(
        json.dumps(
            {
                "__class__": "ExternalPipelineOrigin",
                "external_repository_origin": {
                    "__class__": "ExternalRepositoryOrigin",
                    "repository_location_origin": {
                        "__class__": "RegisteredRepositoryLocationOrigin",
                        "location_name": "payments_pipeline",
                    },
                    "repository_name": "__repository__",
                },
                "pipeline_name": job,
            }
        )
    )
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(job_name=job, run_id=run_id, status=status, remote_job_origin=origin)
    )
    return run_id

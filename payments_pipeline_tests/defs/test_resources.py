"""`payments_db`'s engine lifecycle: made and disposed around each run, shared between ticks."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.definitions import defs
from payments_pipeline.defs.resources import PaymentsDatabase

from .conftest import execute_sweep, url_of


class _Recorder:
    """Wraps `store.make_engine`, remembering each engine and whether it was disposed."""

    def __init__(self) -> None:
        self.real = store.make_engine
        self.made: list[Engine] = []
        self.disposed: list[Engine] = []

    def __call__(self, url: str, **kwargs: Any) -> Engine:
        engine = self.real(url, **kwargs)
        real_dispose = engine.dispose

        def dispose(*args: Any, **kw: Any) -> None:
            self.disposed.append(engine)
            real_dispose(*args, **kw)

        engine.dispose = dispose  # type: ignore[method-assign]
        self.made.append(engine)
        return engine


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    rec = _Recorder()
    monkeypatch.setattr(store, "make_engine", rec)
    return rec


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_run_makes_one_engine_and_disposes_of_it(
    db_env: Engine, recorder: _Recorder, instance: dg.DagsterInstance
) -> None:
    assert execute_sweep(instance).success
    assert len(recorder.made) == 1 and recorder.disposed == recorder.made


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sensor_ticks_share_one_engine(
    db_env: Engine, recorder: _Recorder, persistent_instance: dg.DagsterInstance
) -> None:
    sensor = defs.resolve_sensor_def("webhook_events_sensor")
    url = url_of(db_env)  # a file of this test's own: the per-process cache has no engine for it
    for _ in range(3):
        resources = {"payments_db": PaymentsDatabase(url=url)}
        with dg.build_sensor_context(instance=persistent_instance, resources=resources) as ctx:
            assert sensor.evaluate_tick(ctx).skip_message is not None
    assert len(recorder.made) == 1 and recorder.disposed == []

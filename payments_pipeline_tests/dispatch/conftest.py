"""Fixtures for the celery engine: a RabbitMQ of the test session's own, databases a worker
process can open, and real worker processes.

The broker comes from `PAYMENTS_TEST_CELERY_BROKER_URL` (`.ci/run` sets it): without it the tests
that need a broker skip, saying so; with it, a broker that does not answer fails them. Each session
uses its own queues (`pp_test_<random>` and names under it) and deletes them at the end.

A worker process is started once per module and backend, so its database must outlive one test:
here `engine` is one database per module and backend (a SQLite file, or the session's database on
PostgreSQL/MariaDB), emptied before each test, with each backend's tests run together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import kombu
import pytest
from sqlalchemy import Engine

from payments_pipeline.config import Settings
from payments_pipeline.models import EventStatus

from .. import celery_slow_app
from ..conftest import BACKENDS, _empty_tables, _engine_for, _ServerDatabase
from ..helpers import fetch_event, make_settings
from ..http.support import free_port

BROKER_ENV = "PAYMENTS_TEST_CELERY_BROKER_URL"
READY_SECONDS = 60.0


class Broker:
    """The session's broker and the queues it declared there (each deleted at the end)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue = f"pp_test_{uuid.uuid4().hex[:12]}"
        self.queues = [self.queue]
        self._connection = kombu.Connection(url, connect_timeout=5)

    def connect(self) -> None:
        try:
            self._connection.ensure_connection(max_retries=1, interval_start=0.5, timeout=5)
        except Exception as exc:
            raise RuntimeError(
                f"{BROKER_ENV} is set but the broker does not answer: {exc}".splitlines()[0]
            ) from exc

    def new_queue(self, suffix: str) -> str:
        name = f"{self.queue}.{suffix}"
        self.queues.append(name)
        return name

    def purge(self, name: str) -> None:
        """Drop what a previous test left in `name` (the queue may not exist yet)."""
        channel = self._connection.channel()
        try:
            channel.queue_purge(name)
        except Exception:  # not declared yet: nothing to purge (the channel is closed by it)
            pass
        finally:
            channel.close()

    def close(self) -> None:
        for name in self.queues:
            channel = self._connection.channel()
            try:
                channel.queue_delete(name)
            finally:
                channel.close()
        self._connection.release()


@pytest.fixture(scope="session")
def celery_broker() -> Iterator[Broker]:
    url = os.environ.get(BROKER_ENV)
    if not url:
        pytest.skip(f"{BROKER_ENV} is not set: no RabbitMQ to test the celery engine against")
    broker = Broker(url)
    broker.connect()
    yield broker
    broker.close()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Module-scoped here, so that each backend's tests share one database and one worker."""
    return str(request.param)


@pytest.fixture(scope="module")
def module_database(
    backend: str,
    _servers: dict[str, _ServerDatabase],
    _sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    eng = _engine_for(backend, _servers, _sqlite_template, tmp_path_factory.mktemp("db"))
    yield eng
    if backend == "sqlite":
        eng.dispose()


@pytest.fixture
def engine(module_database: Engine) -> Engine:
    """The module's database on `backend`, emptied for this test."""
    _empty_tables(module_database)
    return module_database


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def worker_env(engine: Engine, broker: Broker, queue: str, **extra: str) -> dict[str, str]:
    """What a worker process reads: this database, this broker and queue, the celery engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    env.update(
        PAYMENTS_DATABASE_URL=url_of(engine),
        PAYMENTS_DISPATCH="celery",
        PAYMENTS_CELERY_BROKER_URL=broker.url,
        PAYMENTS_CELERY_QUEUE=queue,
        **extra,
    )
    return env


class LoggedProcess:
    """A worker (or server) started as a subprocess in a session of its own, so that its pool
    processes end with it; its output goes to a log file the test reads."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self, since: int = 0) -> str:
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def mark(self) -> int:
        """Where the log ends now: what a test waits for must come after it."""
        return self.log_path.stat().st_size

    def wait_for(self, text: str, *, since: int = 0, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(since):
            assert self.proc.poll() is None, f"worker exited:\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{self.log()[-3000:]}"
            time.sleep(0.05)

    def stop(self, *, graceful: bool = True) -> int:
        """SIGTERM (Celery's warm shutdown, uvicorn's graceful one) unless told otherwise, then
        SIGKILL to whatever of its group is left; returns the exit code."""
        try:
            if graceful and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=15)
        finally:
            # The group is the worker's own session: its pool processes die with it.
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            code = self.proc.wait(timeout=15)
        return code


@contextmanager
def running(worker: LoggedProcess, *, graceful: bool = True) -> Iterator[LoggedProcess]:
    """`worker`, stopped whatever happens; a graceful stop must end in exit code 0."""
    try:
        yield worker
    finally:
        code = worker.stop(graceful=graceful)
    if graceful:
        assert code == 0, f"worker exited {code} on SIGTERM:\n{worker.log()[-3000:]}"


@dataclass(frozen=True)
class Workers:
    """The two workers of a module and backend, each on a queue of its own."""

    main: LoggedProcess  # built-in handlers
    main_queue: str
    slow: LoggedProcess  # `celery -A payments_pipeline_tests.celery_slow_app worker`
    slow_queue: str
    pid_file: Path  # where the slow handler writes its process id, then hangs
    # `payments-pipeline worker --metrics-port`'s endpoint (None: Celery's own command, PostgreSQL)
    # and the TMPDIR its private metrics directory is made in.
    metrics_url: str | None
    metrics_temp: Path


@pytest.fixture(scope="module")
def _workers(
    module_database: Engine,
    celery_broker: Broker,
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Workers]:
    """Both workers on `backend`'s database, started together (their start-up is mostly imports,
    which two cores do side by side) and stopped at the end of the module's `backend` tests."""
    folder = tmp_path_factory.mktemp(f"workers_{backend}")
    main_queue = celery_broker.new_queue(backend)
    metrics_temp = folder / "tmp"
    metrics_temp.mkdir()
    main_env = worker_env(module_database, celery_broker, main_queue, TMPDIR=str(metrics_temp))
    # Both doors onto the product's app: our command, and Celery's own on PostgreSQL.
    metrics_url = None
    if backend == "postgres":
        main_argv = [sys.executable, "-m", "celery", "-A", "payments_pipeline.dispatch.celery"]
        main_argv += ["worker", "-Q", main_queue, "--concurrency", "2", "--loglevel", "info"]
        main_argv += ["-n", f"{main_queue}@%h"]
    else:
        exe = str(Path(sys.executable).with_name("payments-pipeline"))
        metrics_port = free_port()
        main_argv = [exe, "worker", "--concurrency", "2", "--metrics-port", str(metrics_port)]
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    slow_queue = celery_broker.new_queue(f"slow.{backend}")
    pid_file = folder / "handler.pid"
    slow_env = worker_env(
        module_database, celery_broker, slow_queue, **{celery_slow_app.PID_FILE_ENV: str(pid_file)}
    )
    slow_argv = [sys.executable, "-m", "celery", "-A", celery_slow_app.__name__, "worker"]
    slow_argv += ["-Q", slow_queue, "--concurrency", "1", "--loglevel", "info"]
    # A node name of its own (a taken one stops the worker), and no mingle: a second less.
    slow_argv += ["-n", f"{slow_queue}@%h", "--without-mingle"]
    with ExitStack() as stack:
        # `payments-pipeline worker` must stop cleanly on SIGTERM (a warm shutdown takes about
        # two seconds): checked once, on SQLite; the other workers are stopped with SIGKILL.
        main = stack.enter_context(
            running(
                LoggedProcess(main_argv, main_env, folder / "main.log"),
                graceful=backend == "sqlite",
            )
        )
        slow = stack.enter_context(
            running(LoggedProcess(slow_argv, slow_env, folder / "slow.log"), graceful=False)
        )
        for worker in (main, slow):
            worker.wait_for(" ready.", timeout=READY_SECONDS)
        yield Workers(main, main_queue, slow, slow_queue, pid_file, metrics_url, metrics_temp)
    if backend == "sqlite":  # stopped with SIGTERM: its private metrics directory is gone
        assert list(metrics_temp.glob("payments-pipeline-metrics-*")) == []


@pytest.fixture
def workers(_workers: Workers, celery_broker: Broker) -> Workers:
    """The module's workers on `engine`'s database, their queues emptied of whatever an earlier
    test left there."""
    celery_broker.purge(_workers.main_queue)
    celery_broker.purge(_workers.slow_queue)
    _workers.pid_file.unlink(missing_ok=True)
    return _workers


@pytest.fixture
def celery_worker(workers: Workers) -> LoggedProcess:
    """A worker with the built-in handlers on `engine`'s database, consuming `celery_queue`."""
    return workers.main


@pytest.fixture
def celery_queue(workers: Workers) -> str:
    return workers.main_queue


@pytest.fixture
def celery_settings(engine: Engine, celery_broker: Broker, celery_queue: str) -> Settings:
    """Settings that publish to the module worker's queue."""
    return make_settings(engine, celery_broker_url=celery_broker.url, celery_queue=celery_queue)


def wait_processed(
    engine: Engine, event_ids: list[int], worker: LoggedProcess, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    for event_id in event_ids:
        while fetch_event(engine, event_id).status is not EventStatus.PROCESSED:
            assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-3000:]}"
            assert time.monotonic() < deadline, f"event {event_id} not processed:\n{worker.log()}"
            time.sleep(0.05)

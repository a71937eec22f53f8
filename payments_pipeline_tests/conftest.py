"""Database fixtures: every test runs on SQLite, and on PostgreSQL and MariaDB when the suite is
told where they are (`PAYMENTS_TEST_POSTGRES_URL`, `PAYMENTS_TEST_MYSQL_URL`; `.ci/run` sets both).

Each test session creates its own database on each server (`pp_test_<random>`), migrates it once,
empties the tables between tests and drops it at the end, so runs never see each other's rows.
Without a variable those tests skip with the reason; with it, an unreachable server is an error.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import migrations, store
from payments_pipeline.config import Settings
from payments_pipeline.models import EventStatus, Provider, utcnow

from .helpers import make_settings, monetbil_payload, stripe_payload

# The fakes of the providers' APIs, and the environment the doors read, as fixtures for every
# folder.
pytest_plugins = ("payments_pipeline_tests.fakes.fixtures", "payments_pipeline_tests.doors")

BACKENDS = ("sqlite", "postgres", "mysql")
SERVER_ENV = {"postgres": "PAYMENTS_TEST_POSTGRES_URL", "mysql": "PAYMENTS_TEST_MYSQL_URL"}
_TABLES_IN_DELETE_ORDER = (
    "sweep_events",
    "sweep_runs",
    "payment_ledger",
    "payments",
    "webhook_events",
)


def server_url(backend: str) -> str | None:
    return os.environ.get(SERVER_ENV[backend]) or None


class _ServerDatabase:
    """A database of our own on a shared server, created on first use and dropped at exit."""

    def __init__(self, backend: str, admin_url: str, revision: str = "head") -> None:
        self.backend = backend
        self.admin_url = store.normalize_url(admin_url)
        self.name = f"pp_test_{uuid.uuid4().hex[:12]}"
        self.url = (
            sa.make_url(self.admin_url)
            .set(database=self.name)
            .render_as_string(hide_password=False)
        )
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {self.name}")
        except sa.exc.OperationalError as exc:
            raise RuntimeError(
                f"{SERVER_ENV[backend]} is set but the server does not answer: "
                f"{exc.orig!s}".splitlines()[0]
            ) from exc
        finally:
            admin.dispose()
        self.engine = store.make_engine(self.url, pool_size=12, max_overflow=12)
        migrations.upgrade(self.engine, revision)

    def drop(self) -> None:
        self.engine.dispose()
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if self.backend == "postgres":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.name}")
        admin.dispose()


@pytest.fixture(scope="session")
def _servers() -> Iterator[dict[str, _ServerDatabase]]:
    made: dict[str, _ServerDatabase] = {}
    yield made
    for db in made.values():
        db.drop()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = store.make_engine(f"sqlite:///{path}")
    migrations.upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


def _empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in _TABLES_IN_DELETE_ORDER:
            conn.execute(store.metadata.tables[table].delete())


def _engine_for(
    backend: str,
    servers: dict[str, _ServerDatabase],
    template: Path,
    tmp_path: Path,
) -> Engine:
    if backend == "sqlite":
        path = tmp_path / "payments.sqlite3"
        shutil.copyfile(template, path)
        return store.make_engine(f"sqlite:///{path}")
    url = server_url(backend)
    if url is None:
        pytest.skip(f"{SERVER_ENV[backend]} is not set: no {backend} server to test against")
    if backend not in servers:
        servers[backend] = _ServerDatabase(backend, url)
    engine = servers[backend].engine
    _empty_tables(engine)
    return engine


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(
    backend: str,
    _servers: dict[str, _ServerDatabase],
    _sqlite_template: Path,
    tmp_path: Path,
) -> Iterator[Engine]:
    """A migrated, empty database on `backend` (each test gets its own rows)."""
    eng = _engine_for(backend, _servers, _sqlite_template, tmp_path)
    yield eng
    if backend == "sqlite":
        eng.dispose()


@pytest.fixture
def engine_at_revision(backend: str, tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """A database of its own on `backend`, migrated only to the revision asked for (to test an
    upgrade with rows in it); dropped at the end."""
    made: list[_ServerDatabase] = []
    engines: list[Engine] = []

    def at(revision: str) -> Engine:
        if backend == "sqlite":
            eng = store.make_engine(f"sqlite:///{tmp_path / f'at_{revision}.sqlite3'}")
            migrations.upgrade(eng, revision)
            engines.append(eng)
            return eng
        url = server_url(backend)
        if url is None:
            pytest.skip(f"{SERVER_ENV[backend]} is not set: no {backend} server to test against")
        made.append(_ServerDatabase(backend, url, revision))
        return made[-1].engine

    yield at
    for eng in engines:
        eng.dispose()
    for db in made:
        db.drop()


@pytest.fixture
def sqlite_engine(_sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """For tests whose behaviour does not depend on the database."""
    eng = _engine_for("sqlite", {}, _sqlite_template, tmp_path)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(engine: Engine) -> Settings:
    return make_settings(engine)


EventFactory = Callable[..., int]


@pytest.fixture
def event_factory(engine: Engine) -> EventFactory:
    """Insert a `webhook_events` row in any state; returns its id."""
    counter = iter(range(1, 10**9))

    def make(
        provider: Provider | str = Provider.STRIPE,
        *,
        status: EventStatus | str = EventStatus.RECEIVED,
        provider_event_id: str | None = None,
        event_type: str | None = None,
        payload: str | None = None,
        attempts: int = 0,
        dispatched_at: dt.datetime | None = None,
        processing_started_at: dt.datetime | None = None,
        next_attempt_at: dt.datetime | None = None,
        created_at: dt.datetime | None = None,
    ) -> int:
        provider = Provider(provider)
        n = next(counter)
        if provider is Provider.STRIPE:
            provider_event_id = provider_event_id or f"evt_{n}"
            event_type = event_type or "payment_intent.succeeded"
            payload = payload or stripe_payload(provider_event_id, event_type, reference=f"pi_{n}")
        else:
            provider_event_id = provider_event_id or f"tx_{n}"
            event_type = event_type or "payment.success"
            payload = payload or monetbil_payload(provider_event_id, payment_ref=f"order-{n}")
        now = utcnow()
        with engine.begin() as conn:
            result = conn.execute(
                sa.insert(store.webhook_events).values(
                    provider=provider.value,
                    provider_event_id=provider_event_id,
                    event_type=event_type,
                    status=EventStatus(status).value,
                    payload=payload,
                    attempts=attempts,
                    attempts_base=0,
                    dispatched_at=dispatched_at,
                    processing_started_at=processing_started_at,
                    next_attempt_at=next_attempt_at,
                    created_at=created_at or now,
                    updated_at=now,
                )
            )
            return int(result.inserted_primary_key[0])

    return make


@pytest.fixture
def processing_event(event_factory: EventFactory) -> EventFactory:
    """Insert an event in an attempt: `processing` since `started`, `attempts` 1 unless given;
    other columns as `event_factory` takes them. Returns its id."""

    def make(
        provider: Provider | str = Provider.STRIPE,
        *,
        started: dt.datetime,
        attempts: int = 1,
        **columns: Any,
    ) -> int:
        return event_factory(
            provider,
            status=EventStatus.PROCESSING,
            attempts=attempts,
            processing_started_at=started,
            **columns,
        )

    return make

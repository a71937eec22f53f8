"""The soak's knobs, in one frozen dataclass shared by the CLI, the test and the orchestrator.

Defaults are the 10-minute run of docs/RELIABILITY.md; the test in the suite shortens the duration
and stops chaos early so the one-minute stuck threshold fits its time budget.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from payments_pipeline import store

Backend = Literal["postgres", "mysql"]
BACKENDS: tuple[Backend, ...] = ("postgres", "mysql")

# How claimed events reach processing: `table` (the soak's table workers, `python -m soak.worker`)
# or `celery` (Celery workers on a private RabbitMQ queue, `celery -A soak.celery_app worker`).
Dispatch = Literal["table", "celery"]
DISPATCHES: tuple[Dispatch, ...] = ("table", "celery")
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"

# The servers this machine runs (trust auth, no password): the soak creates its own database there.
DEFAULT_SERVER_URLS: dict[Backend, str] = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql://root@127.0.0.1:3306/mysql",
}

REPO = Path(__file__).resolve().parents[1]


def backend_of(url: str) -> Backend:
    """`postgres` or `mysql` from a server URL (MariaDB speaks the MySQL dialect)."""
    name = sa.make_url(store.normalize_url(url)).get_backend_name()
    if name == "postgresql":
        return "postgres"
    if name in {"mysql", "mariadb"}:
        return "mysql"
    raise ValueError(f"the soak runs on PostgreSQL or MariaDB/MySQL, not {name!r}")


@dataclass(frozen=True)
class SoakConfig:
    """Everything a run depends on; `seed` makes the load and the chaos reproducible in shape."""

    server_url: str
    duration: float = 600.0
    dispatch: Dispatch = "table"
    broker_url: str = field(default=DEFAULT_BROKER_URL, repr=False)
    # Pool processes per Celery worker (`--concurrency`); `workers` is the number of workers.
    celery_concurrency: int = 2
    # New provider events per second (each is delivered 1-5 times, so deliveries are ~2.5x this).
    rate: float = 40.0
    workers: int = 3
    serve_workers: int = 2
    failure_rate: float = 0.1
    # A random pause after the effect is written and before the commit, up to this: it widens the
    # window in which a SIGKILL or a cut connection lands between an effect and its commit.
    handler_delay_ms: float = 20.0
    max_attempts: int = 10
    kill_every: tuple[float, float] = (2.0, 8.0)
    cut_every: tuple[float, float] = (3.0, 10.0)
    cut_fraction: float = 0.5
    # A worker frozen (SIGSTOP) past the processing timeout, then woken: the fence's test.
    freeze_every: tuple[float, float] = (60.0, 120.0)
    freeze_for: tuple[float, float] = (80.0, 100.0)
    max_freezes: int = 0  # 0: no limit
    # The celery engine's broker faults, through a TCP proxy the soak puts in front of RabbitMQ
    # (`soak.tcp_proxy`): every broker connection cut at once, and the broker unreachable for
    # `broker_down_for` seconds. None: no such fault.
    broker_cut_every: tuple[float, float] | None = (15.0, 30.0)
    broker_down_every: tuple[float, float] | None = (40.0, 80.0)
    broker_down_for: float = 10.0
    sweep_every: tuple[float, float] = (5.0, 10.0)
    concurrent_sweep_chance: float = 0.3
    # Chaos (kills, cuts) and failure injection stop this many seconds before the load does.
    chaos_stop_early: float = 0.0
    # When chaos would stop, keep it (and the load, shifted by as much) up to this many seconds
    # longer until every kind of fault has happened once: a kill, a cut, an injected handler
    # failure and, with `max_freezes`, that many freezes (with `celery`: a pool-process kill, a
    # worker kill and a kill seen mid-handler instead of "a kill"). A loaded machine can take
    # longer to reach a worker mid-handler; a short soak that asserts its faults must not depend
    # on luck.
    chaos_grace: float = 0.0
    settle_timeout: float = 300.0
    drain_timeout: float = 60.0
    out_of_order_chance: float = 0.35
    forged_chance: float = 0.03
    query_string_chance: float = 0.2
    seed: int = field(default_factory=lambda: secrets.randbelow(2**31))
    log_dir: Path | None = None  # kept after the run when given; a temporary directory otherwise

    def __post_init__(self) -> None:
        backend_of(self.server_url)
        if self.duration <= 0 or self.rate <= 0 or self.workers < 1 or self.serve_workers < 1:
            raise ValueError("duration and rate must be > 0, workers and serve_workers >= 1")
        if not 0 <= self.failure_rate < 1:
            raise ValueError("failure_rate must be in [0, 1)")
        if not 0 <= self.chaos_stop_early < self.duration:
            raise ValueError("chaos_stop_early must be in [0, duration)")
        if self.chaos_grace < 0:
            raise ValueError("chaos_grace must be >= 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {', '.join(DISPATCHES)}")
        if self.celery_concurrency < 1:
            raise ValueError("celery_concurrency must be >= 1")
        if self.broker_down_for <= 0:
            raise ValueError("broker_down_for must be > 0")

    @property
    def backend(self) -> Backend:
        return backend_of(self.server_url)

    @property
    def broker_faults(self) -> bool:
        """Whether the run goes through the soak's TCP proxy (celery, with a broker fault)."""
        return self.dispatch == "celery" and (
            self.broker_cut_every is not None or self.broker_down_every is not None
        )

    @property
    def chaos_seconds(self) -> float:
        return self.duration - self.chaos_stop_early

    @property
    def freezes_enabled(self) -> bool:
        """Freezes run on the table engine only (docs/RELIABILITY.md, "The celery soak")."""
        return self.dispatch == "table"

"""Chaos: at random intervals, SIGKILL a worker, freeze one (SIGSTOP) past the processing timeout,
or cut a random share of the database's connections (see `SoakDatabase.cut_connections`); on the
celery engine, also cut every broker connection at once, or make the broker unreachable for
seconds (through the soak's `TcpProxy` in front of RabbitMQ).

Kills aim at, and freezes always land on, a worker whose handler holds an uncommitted effect
(see `supervisor.py`): a kill tests the rollback and the `processing_stalled` reclaim, a freeze
the attempt fence (the frozen worker wakes up after its event was reclaimed and must commit
nothing).
Cuts hit every connection to the soak database: the receiver's pool (a delivery then answers 503
and is retried), the workers' (an attempt fails, or its failure cannot be recorded and the row
waits for the sweep) and the sweeps' (a claim's inline processing fails: `dispatch_failed`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from .database import SoakDatabase
from .supervisor import WorkerSupervisor
from .tcp_proxy import TcpProxy

log = logging.getLogger(__name__)


@dataclass
class ChaosStats:
    kills: int = 0
    freezes: int = 0
    cut_rounds: int = 0
    cut_connections: int = 0
    cut_errors: int = 0
    broker_cuts: int = 0
    broker_cut_connections: int = 0
    broker_outages: int = 0


class Chaos:
    """Runs on its own thread from `start()` until `stop()`."""

    def __init__(
        self,
        db: SoakDatabase,
        workers: WorkerSupervisor,
        *,
        kill_every: tuple[float, float],
        cut_every: tuple[float, float],
        cut_fraction: float,
        freeze_every: tuple[float, float],
        freeze_for: tuple[float, float],
        max_freezes: int,
        seed: int,
        broker: TcpProxy | None = None,
        broker_cut_every: tuple[float, float] | None = None,
        broker_down_every: tuple[float, float] | None = None,
        broker_down_for: float = 10.0,
    ) -> None:
        self.broker = broker
        self.broker_cut_every = broker_cut_every if broker is not None else None
        self.broker_down_every = broker_down_every if broker is not None else None
        self.broker_down_for = broker_down_for
        self.db = db
        self.workers = workers
        self.kill_every = kill_every
        self.cut_every = cut_every
        self.cut_fraction = cut_fraction
        self.freeze_every = freeze_every
        self.freeze_for = freeze_for
        self.max_freezes = max_freezes  # 0: no limit
        self.rng = random.Random(seed)
        self.stats = ChaosStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if self.broker is not None:
            self.broker.up()  # an outage never outlives the chaos

    def _next(self, every: tuple[float, float] | None, now: float) -> float:
        return float("inf") if every is None else now + self.rng.uniform(*every)

    def _run(self) -> None:
        now = time.monotonic()
        next_kill = now + self.rng.uniform(*self.kill_every)
        next_cut = now + self.rng.uniform(*self.cut_every)
        next_freeze = now + self.rng.uniform(*self.freeze_every)
        if not self.workers.supports_freeze:
            next_freeze = float("inf")
        next_broker_cut = self._next(self.broker_cut_every, now)
        next_outage = self._next(self.broker_down_every, now)
        outage_ends = float("inf")
        while not self._stop.wait(
            max(
                0.0,
                min(next_kill, next_cut, next_freeze, next_broker_cut, next_outage, outage_ends)
                - time.monotonic(),
            )
        ):
            now = time.monotonic()
            if now >= outage_ends and self.broker is not None:
                self.broker.up()
                log.info("broker reachable again")
                outage_ends = float("inf")
                next_outage = self._next(self.broker_down_every, now)
            if now >= next_outage and self.broker is not None:
                self.broker.down()
                self.stats.broker_outages += 1
                log.info("broker unreachable for %.0f s", self.broker_down_for)
                outage_ends = now + self.broker_down_for
                next_outage = float("inf")  # the next one is drawn when this one ends
            if now >= next_broker_cut and self.broker is not None:
                if outage_ends == float("inf"):  # nothing to cut during an outage
                    self.stats.broker_cuts += 1
                    self.stats.broker_cut_connections += self.broker.cut()
                next_broker_cut = self._next(self.broker_cut_every, now)
            if now >= next_kill:
                if self.workers.kill_random(self.rng):
                    self.stats.kills += 1
                next_kill = now + self.rng.uniform(*self.kill_every)
            if now >= next_cut:
                self._cut()
                next_cut = now + self.rng.uniform(*self.cut_every)
            if now >= next_freeze:
                if self.workers.freeze_random(self.rng, self.rng.uniform(*self.freeze_for)):
                    self.stats.freezes += 1
                done = self.max_freezes and self.stats.freezes >= self.max_freezes
                next_freeze = float("inf") if done else now + self.rng.uniform(*self.freeze_every)

    def _cut(self) -> None:
        try:
            cut = self.db.cut_connections(self.cut_fraction, self.rng)
        except Exception as exc:  # the admin connection itself may hiccup; keep the chaos going
            self.stats.cut_errors += 1
            log.warning("connection cut failed: %s", type(exc).__name__)
            return
        self.stats.cut_rounds += 1
        self.stats.cut_connections += cut

"""Chaos: at random intervals, SIGKILL a worker, freeze one (SIGSTOP) past the processing timeout,
or cut a random share of the database's connections (see `SoakDatabase.cut_connections`).

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

log = logging.getLogger(__name__)


@dataclass
class ChaosStats:
    kills: int = 0
    freezes: int = 0
    cut_rounds: int = 0
    cut_connections: int = 0
    cut_errors: int = 0


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
    ) -> None:
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

    def _run(self) -> None:
        now = time.monotonic()
        next_kill = now + self.rng.uniform(*self.kill_every)
        next_cut = now + self.rng.uniform(*self.cut_every)
        next_freeze = now + self.rng.uniform(*self.freeze_every)
        if not self.workers.supports_freeze:
            next_freeze = float("inf")
        while not self._stop.wait(
            max(0.0, min(next_kill, next_cut, next_freeze) - time.monotonic())
        ):
            now = time.monotonic()
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

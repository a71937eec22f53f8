"""The Celery worker pool: `count` `celery -A soak.celery_app worker` processes, kept running and
killed at random.

Each worker is Celery's own command on the soak's app module (`soak.celery_app`: the product's
app, task and settings, the soak's failing handlers), consuming the run's private queue with a
prefork pool of `concurrency` processes. Two kills, chosen at random, both aimed at a pool
process whose handler holds an uncommitted effect (its byte in `<log dir>/busy/<pid>`, set during
the handler's pause; the chaos waits up to 2 s for one):

- SIGKILL of that *pool process*: the worker's main process sees it die, rejects the message
  (`reject_on_worker_lost`), the broker redelivers it, and the redelivery finds the attempt's row
  `processing` (`not_claimed`); the sweep reclaims it a minute later (`processing_stalled`). The
  main process starts a new pool process itself.
- SIGKILL of the *whole worker* (its main process): the pool processes die with it (Celery sets
  their parent-death signal to SIGKILL; the supervisor kills what is left of the group anyway),
  the broker closes its connection and requeues every message it had not acknowledged (the
  running ones and the prefetched ones). The supervisor starts a replacement worker.

Any other exit is unexpected: a worker's main process exiting on its own, or a pool process
dying that the chaos did not kill (Celery logs each one: `Process 'ForkPoolWorker-N' pid:P
exited with ...`; a hard time limit would be one).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .processes import PYTHON, Child
from .supervisor import WorkerSupervisor

# What `soak.celery_app` reads (Celery's command line has no room for the soak's options).
FAILURE_RATE_ENV = "SOAK_FAILURE_RATE"
HANDLER_DELAY_ENV = "SOAK_HANDLER_DELAY_MS"
SEED_ENV = "SOAK_SEED"
BUSY_DIR_ENV = "SOAK_BUSY_DIR"

# The share of kills that hit one pool process (the rest kill a whole worker).
POOL_KILL_SHARE = 0.5
# A worker is a target this long after it logged " ready.": Celery checks right after that line
# that no pool process died while it started, and gives up for good if one did ("Unrecoverable
# error: WorkerLostError('Could not start worker processes')"), which a kill must not provoke.
READY_MARGIN = 1.0
_POOL_EXIT = re.compile(r"Process '([^']+)' pid:(\d+) exited with '([^']+)'")
# Celery's own supervision: a new pool process that has not said it is up within
# `worker_proc_alive_timeout` (4 s) is SIGKILLed by its worker, which starts another.
_NO_UP = re.compile(r"Timed out waiting for UP message from <ForkProcess\(([^,]+),")
_RAN_TASK = re.compile(r"/(ForkPoolWorker-\d+)\] soak task start")


@dataclass
class CeleryKills:
    pool_kills: int = 0
    pool_kills_mid_handler: int = 0
    worker_kills: int = 0
    worker_kills_mid_handler: int = 0  # one of its pool processes held an uncommitted effect


def pool_pids(main_pid: int) -> list[int]:
    """The pool processes of a worker: its main process's children (/proc)."""
    try:
        text = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class CeleryWorkerSupervisor(WorkerSupervisor):
    supports_freeze = False

    def __init__(
        self,
        count: int,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        seed: int,
        queue: str,
        concurrency: int,
    ) -> None:
        super().__init__(count, env, log_dir, seed=seed)
        self.queue = queue
        self.concurrency = concurrency
        self.kills = CeleryKills()
        self.busy_dir = log_dir / "busy"
        self.busy_dir.mkdir(exist_ok=True)
        self._killed_pool_pids: set[int] = set()
        self._maps: dict[int, mmap.mmap] = {}
        self._ready_at: dict[int, float] = {}  # main pid -> when its " ready." line was seen

    def _new_child(self, slot: int, n: int) -> Child:
        env = {
            **self.env,
            FAILURE_RATE_ENV: str(self.failure_rate),
            HANDLER_DELAY_ENV: str(self.handler_delay_ms),
            SEED_ENV: str(self._seed + n),
            BUSY_DIR_ENV: str(self.busy_dir),
        }
        argv = [PYTHON, "-m", "celery", "-A", "soak.celery_app", "worker", "-Q", self.queue]
        argv += ["--pool", "prefork", "--concurrency", str(self.concurrency)]
        argv += ["--loglevel", "info", "-n", f"{self.queue}-{n:04d}@%h"]
        # As `payments-pipeline worker` runs it: no mingle (a second of waiting at each start),
        # no gossip (nothing to share: we never revoke, the database orders everything).
        argv += ["--without-mingle", "--without-gossip"]
        # SIGTERM to the main process only: it stops its pool once the running tasks are done.
        return Child(f"worker-{n:04d}", argv, env, self.log_dir, term_group=False)

    def _up(self, child: Child) -> bool:
        """The worker logged " ready." at least `READY_MARGIN` s ago (its pool is running)."""
        seen = self._ready_at.get(child.pid)
        if seen is None:
            with contextlib.suppress(OSError):
                if " ready." in child.stderr_path.read_text(errors="replace"):
                    seen = self._ready_at[child.pid] = time.monotonic()
        return seen is not None and time.monotonic() - seen >= READY_MARGIN

    def wait_up(self, timeout: float) -> int:
        """Wait up to `timeout` s until every worker is up; how many are."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                up = sum(1 for c in self._slots if c is not None and c.alive() and self._up(c))
            if up == self.count or time.monotonic() >= deadline:
                return up
            time.sleep(0.5)

    def _busy_pid(self, pid: int) -> bool:
        """The pool process `pid` holds an uncommitted effect (its byte is 1)."""
        busy = self._maps.get(pid)
        if busy is None:
            path = self.busy_dir / str(pid)
            try:
                with open(path, "r+b") as f:
                    busy = self._maps[pid] = mmap.mmap(f.fileno(), 1)
            except (OSError, ValueError):  # not created yet (the process is starting)
                return False
        return bool(busy[0])

    def kill_random(self, rng: random.Random, wait_busy: float = 2.0) -> bool:
        """SIGKILL one pool process or one whole worker (at random, `POOL_KILL_SHARE`), aimed at
        a pool process seen mid-handler within `wait_busy` s (or any, if none got there); False
        if no worker had its pool running by then."""
        pool_kill = rng.random() < POOL_KILL_SHARE
        deadline = time.monotonic() + wait_busy
        while True:
            with self._lock:
                # Only workers that are up (`_up`): one still starting has nothing to lose yet,
                # and a pool process killed then would make Celery give the worker up.
                up = [c for c in self._slots if c is not None and c.alive() and self._up(c)]
                pools = [(c, pid) for c in up for pid in pool_pids(c.pid)]
                if not pools and time.monotonic() >= deadline:
                    self._line("kill skipped: no worker is up")
                    return False
                busy = [(c, pid) for c, pid in pools if self._busy_pid(pid)]
                if busy or (pools and time.monotonic() >= deadline):
                    if pool_kill:
                        victim, pid = rng.choice(busy or pools)
                        self._killed_pool_pids.add(pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        what = "kill pool process (mid-handler):" if busy else "kill pool process:"
                        self._note(what, victim, f" child pid {pid}")
                        self.kills.pool_kills += 1
                        self.kills.pool_kills_mid_handler += bool(busy)
                    else:
                        victim = rng.choice([c for c, _ in busy or pools])
                        self._expected_exit.add(victim.pid)
                        victim.kill()
                        what = "kill worker (mid-handler):" if busy else "kill worker:"
                        self._note(what, victim)
                        self.kills.worker_kills += 1
                        self.kills.worker_kills_mid_handler += bool(busy)
                    self.stats.kills += 1
                    self.stats.kills_mid_handler += bool(busy)
                    return True
            time.sleep(0.002)

    def freeze_random(self, rng: random.Random, seconds: float, wait: float = 5.0) -> bool:
        return False  # not on Celery workers (docs/RELIABILITY.md, "The celery soak")

    def stop_all(self) -> None:
        super().stop_all()
        for busy in self._maps.values():
            busy.close()
        self._maps.clear()

    def pool_exits(self) -> tuple[list[str], int]:
        """Pool processes that died and were not killed by the chaos, from Celery's own lines
        (each one a violation); and how many of the others were new pool processes that Celery
        itself killed for not coming up in time (`_NO_UP`: on a loaded machine), each checked to
        have run no task (else it is a violation too)."""
        out, abandoned = [], 0
        for path in self.log_files():
            if not path.is_file():
                continue
            text = path.read_text(errors="replace")
            late = set(_NO_UP.findall(text))
            ran = set(_RAN_TASK.findall(text))
            for found in _POOL_EXIT.finditer(text):
                name, pid, how = found[1], int(found[2]), found[3]
                if pid in self._killed_pool_pids:
                    continue
                if name in late and name not in ran:
                    abandoned += 1
                    continue
                out.append(
                    f"{path.stem}: pool process {name} pid {pid} exited with {how}, not killed "
                    "by the chaos"
                )
        return out, abandoned

    def pool_exits_seen(self) -> int:
        """Pool-process deaths Celery logged (each a kill of ours, or an unexpected exit)."""
        total = 0
        for path in self.log_files():
            if path.is_file():
                text = path.read_text(errors="replace")
                total += len(_POOL_EXIT.findall(text))
        return total

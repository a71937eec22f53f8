"""Sweeps through the real Dagster job: `payments-pipeline requeue-stuck-webhooks --json`.

With `DAGSTER_HOME` set the CLI runs the job `requeue_stuck_webhooks` in its own process and
prints the summary JSON. It refuses to start while another sweep run is in progress on the same
instance (by design), so sweeps launched together each get their own Dagster home, initialised
from the repo's `dagster_home/dagster.yaml`. Overlapping sweeps on one database are what the
claims must make safe: each stuck event dispatched by one sweep only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import REPO
from .processes import CLI

log = logging.getLogger(__name__)

INSTANCE_CONFIG = REPO / "dagster_home" / "dagster.yaml"
SWEEP_TIMEOUT = 180.0
MAX_AT_ONCE = 3


@dataclass(frozen=True)
class SweepResult:
    number: int
    phase: str  # load, settle, final
    group_size: int  # how many sweeps ran at once with this one
    returncode: int
    seconds: float
    summary: dict[str, Any] | None  # the parsed --json output (None if the run failed)
    error: str | None  # the CLI's `error:` line, or why there is no summary

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.summary is not None


class Sweeper:
    """Launches sweeps (alone or several at once) and keeps every result."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, *, seed: int) -> None:
        self.env = dict(env)
        self.log_dir = log_dir / "sweeps"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.results: list[SweepResult] = []
        self.groups: list[int] = []  # sizes of the groups launched
        self._homes = [self._new_home(i) for i in range(MAX_AT_ONCE)]
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: set[subprocess.Popen[bytes]] = set()

    def _new_home(self, slot: int) -> Path:
        home = self.log_dir / f"dagster_home_{slot}_{time.monotonic_ns()}"
        home.mkdir(parents=True)
        shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
        return home

    # --- one group --------------------------------------------------------------------------

    def run_group(self, size: int, phase: str) -> list[SweepResult]:
        """`size` sweeps at once, each on its own Dagster home; returns when all have ended."""
        size = max(1, min(size, MAX_AT_ONCE))
        with self._lock:
            self.groups.append(size)
        out: list[SweepResult] = []
        threads = [
            threading.Thread(target=lambda s=slot: out.append(self._run(s, size, phase)))
            for slot in range(size)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def _run(self, slot: int, group_size: int, phase: str) -> SweepResult:
        with self._lock:
            self._n += 1
            number = self._n
            home = self._homes[slot]
        env = {**self.env, "DAGSTER_HOME": str(home)}
        argv = [CLI, "requeue-stuck-webhooks", "--json"]
        started = time.monotonic()
        with open(self.log_dir / f"sweep-{number:04d}.err", "wb") as err:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
            with self._lock:
                self._running.add(proc)
            try:
                stdout, _ = proc.communicate(timeout=SWEEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                stdout, _ = proc.communicate()
            finally:
                with self._lock:
                    self._running.discard(proc)
        (self.log_dir / f"sweep-{number:04d}.out").write_bytes(stdout)
        seconds = time.monotonic() - started
        result = self._result(number, phase, group_size, proc.returncode, seconds, stdout)
        if result.error and "already queued or in progress" in result.error:
            with self._lock:  # a run left STARTED (a timed-out sweep): start a fresh instance
                self._homes[slot] = self._new_home(slot)
        with self._lock:
            self.results.append(result)
        return result

    def _result(
        self, number: int, phase: str, size: int, code: int, seconds: float, stdout: bytes
    ) -> SweepResult:
        summary: dict[str, Any] | None = None
        error: str | None = None
        if code == 0:
            try:
                summary = json.loads(stdout)
            except ValueError:
                error = "exit 0 but the output is not JSON"
        else:
            err_file = self.log_dir / f"sweep-{number:04d}.err"
            lines = err_file.read_text(errors="replace").splitlines()
            errors = [line for line in lines if line.startswith("error:")]
            error = errors[-1] if errors else f"exit {code}"
        return SweepResult(number, phase, size, code, seconds, summary, error)

    # --- the cycle during the load ----------------------------------------------------------

    def group_size(self, concurrent_chance: float) -> int:
        """1, or 2-3 at `concurrent_chance`."""
        return self.rng.choice((2, 3)) if self.rng.random() < concurrent_chance else 1

    def start_cycle(self, every: tuple[float, float], concurrent_chance: float) -> None:
        """A group of sweeps `every` seconds (uniform) after the last ended, until `stop_cycle()`:
        the first group is always 2-3 sweeps at once (so every run exercises overlapping sweeps),
        later ones at `concurrent_chance`."""

        def cycle() -> None:
            size = self.rng.choice((2, 3))
            while not self._stop.wait(self.rng.uniform(*every)):
                self.run_group(size, "load")
                size = self.group_size(concurrent_chance)

        self._thread = threading.Thread(target=cycle, name="soak-sweeps", daemon=True)
        self._thread.start()

    def stop_cycle(self) -> None:
        """Stop launching; wait for the group in progress to end."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(SWEEP_TIMEOUT + 30)

    def kill_running(self) -> None:
        """On an abort: no sweep process outlives the soak."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            _kill_group(proc)

    def log_files(self) -> list[Path]:
        return sorted(p for p in self.log_dir.glob("sweep-*.*"))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)

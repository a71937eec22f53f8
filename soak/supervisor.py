"""The worker pool: `count` `python -m soak.worker` processes kept running, killed and frozen.

Two faults hit a worker while its handler holds an uncommitted effect (each worker sets its byte
in a small shared memory-mapped file during the handler's pause, and the chaos waits for such a
moment):

- SIGKILL: the process dies, the database rolls its transaction back, the row stays `processing`
  until the sweep reclaims it as `processing_stalled`. The supervisor starts a replacement.
- a freeze longer than the processing timeout: the supervisor sets the worker's freeze request
  in the shared file, and the worker's next handler stops its own process (SIGSTOP) right after
  writing its effect (asking from outside would race: by the time a SIGSTOP lands the worker may
  have committed). The frozen worker keeps its transaction (and the payment row's lock) while the
  sweep reclaims its event and starts a new attempt; after SIGCONT it tries to commit, and the
  attempt fence must turn it away (`stale`). A replacement runs meanwhile; the woken worker is
  told to stop (SIGTERM: it finishes that one event first) and prints its outcome counts, which
  the report adds up.

Any other exit of a worker is recorded as unexpected: the worker loop survives database errors.
"""

from __future__ import annotations

import contextlib
import mmap
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .processes import PYTHON, Child
from .worker import FREEZE_OFFSET


@dataclass
class WorkerStats:
    started: int = 0
    kills: int = 0
    kills_mid_handler: int = 0  # the victim's effect was written and not committed
    freezes: int = 0  # each one frozen mid-handler, by construction
    unexpected_exits: list[str] = field(default_factory=list)


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc/<pid>/stat)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"
    return False


class WorkerSupervisor:
    supports_freeze = True  # the chaos freezes workers (SharedFlags)

    def __init__(self, count: int, env: Mapping[str, str], log_dir: Path, *, seed: int) -> None:
        self.count = count
        self.env = dict(env)
        self.log_dir = log_dir
        self.failure_rate = 0.0
        self.handler_delay_ms = 0.0
        self.stats = WorkerStats()
        self._seed = seed
        self._slots: list[Child | None] = [None] * count
        self._frozen: list[tuple[Child, float]] = []  # (child, resume at)
        self._waking: list[Child] = []  # resumed and told to stop
        self._retired: list[Child] = []
        self._expected_exit: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="soak-supervisor", daemon=True)
        self._events = open(log_dir / "chaos.log", "a", buffering=1)  # noqa: SIM115 (stop_all)
        self.busy_path = log_dir / "busy.map"
        self.busy_path.write_bytes(bytes(2 * FREEZE_OFFSET))
        self._busy_file = open(self.busy_path, "r+b")  # noqa: SIM115 (closed in stop_all)
        self._busy = mmap.mmap(self._busy_file.fileno(), 0)

    def start(self, failure_rate: float, handler_delay_ms: float) -> None:
        self.failure_rate, self.handler_delay_ms = failure_rate, handler_delay_ms
        with self._lock:
            for slot in range(self.count):
                self._spawn(slot)
        self._thread.start()

    def _spawn(self, slot: int) -> None:
        """A new worker in `slot` (caller holds the lock)."""
        n = self.stats.started
        self.stats.started += 1
        self._busy[slot] = self._busy[FREEZE_OFFSET + slot] = 0
        child = self._new_child(slot, n)
        self._slots[slot] = child
        self._note(f"start in slot {slot}:", child)

    def _new_child(self, slot: int, n: int) -> Child:
        """Start worker number `n` (a table worker: `python -m soak.worker`) for `slot`."""
        argv = [
            PYTHON,
            "-m",
            "soak.worker",
            f"--failure-rate={self.failure_rate}",
            f"--handler-delay-ms={self.handler_delay_ms}",
            f"--seed={self._seed + n}",
            f"--busy-file={self.busy_path}",
            f"--slot={slot}",
        ]
        return Child(f"worker-{n:04d}", argv, self.env, self.log_dir)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for slot, child in enumerate(self._slots):
                    if child is None or child.alive():
                        continue
                    if child.pid not in self._expected_exit:
                        code = child.popen.returncode
                        self.stats.unexpected_exits.append(f"{child.name} exited with {code}")
                        self._note(f"unexpected exit {code}:", child)
                    self._retire(child)
                    self._spawn(slot)
                now = time.monotonic()
                for item in [p for p in self._frozen if p[1] <= now]:
                    self._frozen.remove(item)
                    item[0].resume()
                    item[0].terminate()
                    self._note("resume and stop", item[0])
                    self._waking.append(item[0])
                for child in [c for c in self._waking if not c.alive()]:
                    self._waking.remove(child)
                    self._retire(child)

    def _note(self, what: str, child: Child, detail: str = "") -> None:
        """One line per fault or restart in `<log_dir>/chaos.log`: what happened to which worker."""
        self._line(f"{what} {child.name} (pid {child.pid}){detail}")

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        self._events.write(f"{stamp} {text}\n")

    def _retire(self, child: Child) -> None:
        child.stop(grace=0)  # reaps it and closes its log files
        self._retired.append(child)

    def kill_random(self, rng: random.Random, wait_busy: float = 2.0) -> bool:
        """SIGKILL a worker (restarted by the watch loop); False if none was running.

        Waits up to `wait_busy` s for a worker whose handler holds an uncommitted effect and kills
        that one (or a random one if none got there). "Mid-handler" is what was observed just
        before the signal: on a busy machine the worker may still commit in between.
        """
        deadline = time.monotonic() + wait_busy
        while True:
            with self._lock:
                alive = [(s, c) for s, c in enumerate(self._slots) if c is not None and c.alive()]
                if not alive:
                    return False
                busy = [(s, c) for s, c in alive if self._busy[s]]
                if busy or time.monotonic() >= deadline:
                    _, victim = rng.choice(busy or alive)
                    self._expected_exit.add(victim.pid)
                    victim.kill()
                    self._note("kill (mid-handler):" if busy else "kill (idle):", victim)
                    self.stats.kills += 1
                    self.stats.kills_mid_handler += bool(busy)
                    return True
            time.sleep(0.002)

    def freeze_random(self, rng: random.Random, seconds: float, wait: float = 5.0) -> bool:
        """Freeze a random worker right after its next effect, for `seconds` (a replacement starts
        at once); False if no worker reached a handler within `wait` seconds."""
        with self._lock:
            alive = [(s, c) for s, c in enumerate(self._slots) if c is not None and c.alive()]
            if not alive:
                return False
            slot, child = rng.choice(alive)
            self._busy[FREEZE_OFFSET + slot] = 1
        deadline = time.monotonic() + wait
        while not _stopped(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self._busy[FREEZE_OFFSET + slot] = 0
            if not _stopped(child.pid):
                time.sleep(0.5)  # it may have taken the request just now
                if not _stopped(child.pid):
                    return False
            self._expected_exit.add(child.pid)
            self._note(f"frozen mid-handler for {seconds:.0f}s:", child)
            self._frozen.append((child, time.monotonic() + seconds))
            if self._slots[slot] is child:
                self._spawn(slot)
        self.stats.freezes += 1
        return True

    def frozen(self) -> int:
        with self._lock:
            return len(self._frozen) + len(self._waking)

    def restart_all(self, failure_rate: float) -> None:
        """Replace every running worker with one injecting `failure_rate` (SIGTERM: the current
        event finishes first). Frozen workers stay frozen until their time."""
        with self._lock:
            self.failure_rate = failure_rate
            for slot, child in enumerate(self._slots):
                if child is not None:
                    self._expected_exit.add(child.pid)
                    self._note(f"restart (failure rate {failure_rate}):", child)
                    child.stop()
                    self._retired.append(child)
                self._spawn(slot)

    def stop_all(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            children = [c for c in self._slots if c is not None]
            children += [c for c, _ in self._frozen] + self._waking
            for child in children:
                self._expected_exit.add(child.pid)
                self._note("stop:", child)
                child.stop()
                self._retired.append(child)
            self._slots, self._frozen, self._waking = [None] * self.count, [], []
        if not self._busy.closed:
            self._busy.close()
            self._busy_file.close()
            self._events.close()

    def live_log_files(self) -> list[Path]:
        """The log files of every worker started so far, running, frozen or retired."""
        with self._lock:
            children = [c for c in self._slots if c is not None] + self._retired
            children += [f[0] for f in self._frozen] + self._waking
        return [p for c in children for p in (c.stdout_path, c.stderr_path)]

    def log_files(self) -> list[Path]:
        return [p for c in self._retired for p in (c.stdout_path, c.stderr_path)]

    def outcome_total(self, outcome: str) -> int:
        """Sum of `<outcome> N` over the outcome lines the workers printed when they stopped."""
        pattern = re.compile(rf"\b{re.escape(outcome)} (\d+)")
        total = 0
        for child in self._retired:
            if child.stdout_path.is_file():
                for line in child.stdout_path.read_text(errors="replace").splitlines():
                    if line.startswith("soak worker stopped"):
                        total += sum(int(n) for n in pattern.findall(line))
        return total

"""Child processes: how the soak starts, signals and stops each of them.

Every child starts in its own session (its own process group), so a Ctrl-C on the soak's terminal
reaches the soak alone, which then stops each group itself: SIGTERM, a grace period, SIGKILL. Each
child's stdout and stderr go to files in the run's log directory, which the verifier reads for
leaked secrets, signatures and payloads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from .config import REPO

log = logging.getLogger(__name__)

PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("payments-pipeline"))
# The receiver: the same `payments_pipeline.cli:main` as the `payments-pipeline` script, started
# from `-c`. uvicorn starts `--workers` processes with multiprocessing's spawn, and a spawned child
# first re-imports the parent's `__main__` *file* (the script: the whole CLI, 4-5 s on this
# machine under load) before the thread that answers uvicorn's health-check pings is running;
# uvicorn kills a child that has not answered within 5 s (`timeout_worker_healthcheck`), so on a
# loaded machine every child is killed and respawned forever and the receiver never answers. A
# `-c` main has no file to re-import: the children answer at once and import the app afterwards.
# (docs/RELIABILITY.md, "Findings".)
SERVE = [PYTHON, "-c", "import sys; from payments_pipeline.cli import main; sys.exit(main())"]


class Child:
    """One process with its output in `<log_dir>/<name>.out|.err`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        term_group: bool = True,
    ) -> None:
        self.name = name
        # Whether `stop` sends its SIGTERM to the whole group or to this process alone: a Celery
        # worker's pool children die of a SIGTERM (mid-task), so only its main process is asked,
        # and it stops its children itself once their tasks are done (warm shutdown).
        self.term_group = term_group
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self._files: list[IO[bytes]] = [open(self.stdout_path, "wb"), open(self.stderr_path, "wb")]  # noqa: SIM115
        self.popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        """`sig` to this process only; one that has exited already is left alone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL this process only (chaos): no cleanup, no flush, mid-whatever it was doing."""
        self._signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: frozen mid-whatever, its connections and locks held, until `resume()`."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM without waiting (a worker finishes its current event, then exits)."""
        self._signal(signal.SIGTERM)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the process group, wait up to `grace`, then SIGKILL it; close the log files."""
        try:
            if self.alive():
                self._signal_group(signal.SIGCONT)  # a paused process could not act on SIGTERM
                if self.term_group:
                    self._signal_group(signal.SIGTERM)
                else:
                    self.terminate()
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %ss: killing it", self.name, grace)
            self._signal_group(signal.SIGKILL)  # stragglers of the group (uvicorn's, Celery's)
            return self.popen.wait(10)
        finally:
            for f in self._files:
                f.close()

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def soak_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of every child: ours, the product's settings, and the repo on the path."""
    env = {k: v for k, v in base.items() if not k.startswith(("PAYMENTS_", "DAGSTER_"))}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_healthy(url: str, child: Child, timeout: float = 60.0) -> None:
    """Block until `GET /healthz` answers 200; raise if the server died or never answered."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode} at start")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{child.name} did not answer /healthz within {timeout}s")

"""The private `PROMETHEUS_MULTIPROC_DIR` of one command that serves metrics (`serve`, and
`worker --metrics-port`).

`serve --workers N` runs N uvicorn processes and a Celery worker runs a pool of processes; each
process writes its counters and histograms to files of its own in this directory
(prometheus-client's multiprocess mode), and a scrape of any of them sums them all
(`metrics.scrape`). The command
creates the directory itself, empty, under the system's temporary folder (`TMPDIR`), names it in
`PROMETHEUS_MULTIPROC_DIR` for its own process and the processes it starts, and removes it when
it exits; nothing is left to set up. A `PROMETHEUS_MULTIPROC_DIR` inherited from the environment
is replaced: two commands sharing one directory would count each other's processes, and files
left by an earlier run would be counted again.

A SIGTERM ends the command as before, the directory removed first: uvicorn, with one worker,
restores the handler it found when it has shut down and raises the signal again, which with the
default handler would kill the process before any cleanup could run; here it unwinds the stack
(removing the directory) and the signal is then raised again with the handler found at entry.

prometheus-client chooses its mode once, when it is first imported, from that variable: so this
module never imports it, and `private_directory` refuses to run once something already has (the
command's import order would then be wrong, and metrics silently per-process).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "payments-pipeline-metrics-"


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so that the stack unwinds through the cleanup."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Terminated


@contextmanager
def private_directory() -> Iterator[Path]:
    """A new empty directory as this process's (and its children's) `PROMETHEUS_MULTIPROC_DIR`,
    removed with everything in it on exit, a SIGTERM's included."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the metrics directory was set up: "
            "its multiprocess mode is chosen at import"
        )
    inherited = os.environ.get(ENV)
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    if inherited:
        log.info("%s=%s replaced by this command's own %s", ENV, inherited, path)
    os.environ[ENV] = str(path)
    main = threading.current_thread() is threading.main_thread()  # signals: the main thread only
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    terminated = False
    try:
        yield path
    except _Terminated:
        terminated = True
    finally:
        if main:  # a handler installed outside Python reads as None: the default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if inherited is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = inherited
        shutil.rmtree(path, ignore_errors=True)
    if terminated:
        signal.raise_signal(signal.SIGTERM)  # as the command would have ended without us

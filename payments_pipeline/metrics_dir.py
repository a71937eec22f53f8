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

prometheus-client chooses its mode once, when it is first imported, from that variable: so this
module never imports it, and `private_directory` refuses to run once something already has (the
command's import order would then be wrong, and metrics silently per-process).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "payments-pipeline-metrics-"


@contextmanager
def private_directory() -> Iterator[Path]:
    """A new empty directory as this process's (and its children's) `PROMETHEUS_MULTIPROC_DIR`,
    removed with everything in it on exit."""
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
    try:
        yield path
    finally:
        if inherited is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = inherited
        shutil.rmtree(path, ignore_errors=True)

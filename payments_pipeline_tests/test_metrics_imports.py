"""Where prometheus-client may be imported: only by `metrics`, which only the doors load.

The core never imports it, and neither do the modules a command loads before it sets up its
private multiprocess directory (`metrics_dir`): prometheus-client picks its mode at import, so an
early import would make `serve --workers N` and the Celery pool count per process, unsummed."""

from __future__ import annotations

import subprocess
import sys

BEFORE_THE_DIRECTORY = (
    # the core
    "payments_pipeline.store",
    "payments_pipeline.gate",
    "payments_pipeline.processing",
    "payments_pipeline.sweep",
    "payments_pipeline.status",
    "payments_pipeline.replay",
    "payments_pipeline.providers.stripe",
    "payments_pipeline.providers.monetbil",
    "payments_pipeline.dispatch",
    # what `serve` and `worker` load before the directory exists
    "payments_pipeline.cli",
    "payments_pipeline.metrics_dir",
    "payments_pipeline.http.server",
    "payments_pipeline.dispatch.celery",
)


def _loads_prometheus_client(*modules: str) -> bool:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return out.strip() == "True"


def test_the_core_and_the_command_modules_never_import_prometheus_client() -> None:
    assert not _loads_prometheus_client(*BEFORE_THE_DIRECTORY)
    # The check itself can tell: the doors that count do load it.
    assert _loads_prometheus_client("payments_pipeline.worker")
    assert _loads_prometheus_client("payments_pipeline.http.app")

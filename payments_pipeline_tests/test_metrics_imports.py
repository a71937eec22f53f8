"""Where prometheus-client may be imported: only by `metrics` (and the receiver's `http.metrics`),
which only the doors load; and what a worker never loads: the web server.

The core never imports prometheus-client, and neither do the modules a command loads before it
sets up its private multiprocess directory (`metrics_dir`): prometheus-client picks its mode at
import, so an early import would make `serve --workers N` and the Celery pool count per process,
unsummed. A worker counts its outcomes with `metrics` without loading Starlette or uvicorn: the
receiver's counters, whose labels name `http.errors`' refusal codes, live in `http.metrics`."""

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
WEB_SERVER = ("starlette", "uvicorn")


def _loaded(modules: tuple[str, ...], wanted: tuple[str, ...]) -> set[str]:
    """Which of `wanted` are in `sys.modules` after importing `modules` in a fresh interpreter."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += f"print(','.join(m for m in {wanted!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return set(filter(None, out.strip().split(",")))


def test_the_core_and_the_command_modules_never_import_prometheus_client() -> None:
    assert _loaded(BEFORE_THE_DIRECTORY, ("prometheus_client",)) == set()
    # The check itself can tell: the doors that count do load it.
    assert _loaded(("payments_pipeline.worker",), ("prometheus_client",)) == {"prometheus_client"}
    assert _loaded(("payments_pipeline.http.app",), ("prometheus_client",)) == {"prometheus_client"}


def test_the_workers_never_load_the_web_server() -> None:
    assert _loaded(("payments_pipeline.worker",), WEB_SERVER) == set()
    assert _loaded(("payments_pipeline.dispatch.celery",), WEB_SERVER) == set()
    # The check itself can tell: the receiver's app and server load them.
    receiver = ("payments_pipeline.http.app", "payments_pipeline.http.server")
    assert _loaded(receiver, WEB_SERVER) == set(WEB_SERVER)

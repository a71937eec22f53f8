"""`celery -A soak.celery_app worker -Q soak_<token>`: the product's Celery app with the soak's
failing handlers.

Everything but the handlers is the product's: `payments_pipeline.dispatch.celery`'s app and
settings (acks late, rejected on worker loss, prefetch, time limits under the processing
timeout), its tasks `payments_pipeline.process_webhook_events` (a list of ids, what the product
publishes) and `process_webhook_event` (one id), and its engine per pool process. The
registry is `soak.worker.failing_registry`, the table soak's: each built-in handler writes its
effect, pauses up to the delay, then fails at the failure rate, before the commit.

Read from the environment (the supervisor sets them; Celery's command line has no room for them):
`SOAK_FAILURE_RATE`, `SOAK_HANDLER_DELAY_MS`, `SOAK_SEED` and `SOAK_BUSY_DIR`. Each pool process
creates `<SOAK_BUSY_DIR>/<pid>`, one byte, set to 1 while its handler holds an uncommitted effect:
the chaos aims its pool-process kills (and its worker kills) at such a moment.

Each task run logs two lines per event id it carries, which the soak's audit reads
(`soak.celery_runs`): `soak task start event=<id> redelivered=<bool>` before the product's task
runs, and `soak task end event=<id> outcome=<outcome>` after it returned (`processed`, `failed`,
`dead`, `stale`, `not_claimed`, or `error` when an exception escaped it). A run killed mid-task
has a start line per id and no end line.
"""

from __future__ import annotations

import logging
import mmap
import os
import random
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_init

from payments_pipeline.dispatch.celery import BATCH_TASK_NAME, TASK_NAME, app, use_registry

from .celery_supervisor import BUSY_DIR_ENV, FAILURE_RATE_ENV, HANDLER_DELAY_ENV, SEED_ENV
from .worker import SharedFlags, failing_registry

log = logging.getLogger("soak.celery_app")


class PoolProcessFlags(SharedFlags):
    """This pool process's busy byte, in a file of its own named by its pid (no file: no-ops).
    Freezes are not requested from Celery workers (docs/RELIABILITY.md, "The celery soak")."""

    def __init__(self, busy_dir: str | None) -> None:
        super().__init__(None, 0)
        self._dir = Path(busy_dir) if busy_dir else None

    def attach(self) -> None:
        """Create `<dir>/<pid>` (written whole, then renamed: never read half made) and map it."""
        if self._dir is None:
            return
        path = self._dir / str(os.getpid())
        partial = path.with_suffix(".partial")
        partial.write_bytes(b"\0")
        partial.replace(path)
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 1)

    def freeze_if_asked(self) -> None:
        return None


_seed = int(os.environ.get(SEED_ENV) or 0)
_rng = random.Random(_seed)
_flags = PoolProcessFlags(os.environ.get(BUSY_DIR_ENV))
use_registry(
    failing_registry(
        float(os.environ.get(FAILURE_RATE_ENV) or 0),
        float(os.environ.get(HANDLER_DELAY_ENV) or 0),
        _rng,
        _flags,
    )
)


@worker_process_init.connect
def _pool_process_started(**_: Any) -> None:
    # Forked from the main process: its own random sequence and its own busy byte.
    _rng.seed(_seed * 1_000_003 + os.getpid())
    _flags.attach()


_TASKS = (TASK_NAME, BATCH_TASK_NAME)


def _event_ids(task: Any, args: Any) -> list[str]:
    """The ids a run carries: the batch task's list, or the one id of the former task."""
    if not args:
        return ["?"]
    if task.name == BATCH_TASK_NAME:
        return [str(i) for i in args[0]] if isinstance(args[0], list) else ["?"]
    return [str(args[0])]


@task_prerun.connect
def _task_started(task: Any = None, args: Any = None, **_: Any) -> None:
    if task is None or task.name not in _TASKS:
        return
    delivery = getattr(task.request, "delivery_info", None) or {}
    for event_id in _event_ids(task, args):
        log.info(
            "soak task start event=%s redelivered=%s",
            event_id,
            bool(delivery.get("redelivered")),
        )


@task_postrun.connect
def _task_ended(
    task: Any = None, args: Any = None, retval: Any = None, state: Any = None, **_: Any
) -> None:
    if task is None or task.name not in _TASKS:
        return
    for event_id in _event_ids(task, args):
        if state != "SUCCESS":
            outcome = "error"
        elif isinstance(retval, dict):  # the batch task: each id's outcome
            outcome = str(retval.get(event_id, "error"))
        else:
            outcome = retval if isinstance(retval, str) else "error"
        log.info("soak task end event=%s outcome=%s", event_id, outcome)


__all__ = ["app"]

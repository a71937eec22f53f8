"""`python -m soak.worker`: the core `Worker` with handlers that fail at random, after the effect.

Each built-in handler is wrapped: the wrapper runs it (so the payment row and the ledger row are
written inside the processing transaction), pauses a little, and then, at `--failure-rate`, raises
a plain exception. Processing must then roll the effect back with the attempt and record `failed`
with a backoff; the audit trigger and the ledger prove afterwards that no rolled-back effect
survived and none was applied twice.

During the pause the worker's byte in the shared `--busy-file` is 1: the effect is written and not
committed. The chaos waits for such a moment to SIGKILL a worker, so its kills land mid-transaction
(the case the `processing_stalled` sweep exists for) rather than in an idle poll. A freeze is
requested through the same file and carried out by the handler itself at that exact point
(`SharedFlags`), so the frozen attempt always holds an uncommitted effect when it wakes up.

The settings (database URL, max attempts, backoff) come from the environment like any worker's.
"""

from __future__ import annotations

import argparse
import logging
import mmap
import os
import random
import signal
import sys
import time
from collections.abc import Sequence

from payments_pipeline import store
from payments_pipeline.config import load_settings
from payments_pipeline.handlers import Handler, HandlerContext, HandlerRegistry, default_registry
from payments_pipeline.worker import Worker

INJECTED = "soak: injected handler failure"


class InjectedFailure(Exception):
    """A handler failure the soak asked for: an ordinary error, so the event is retried."""


FREEZE_OFFSET = 128  # the shared file: busy bytes at [slot], freeze requests at [128 + slot]


class SharedFlags:
    """This worker's bytes in the file it shares with the supervisor (no file: no-ops).

    `busy`: 1 while the handler holds an uncommitted effect (the chaos aims its kills at that).
    Freeze request: set by the supervisor; the next handler to see it, right after writing its
    effect, stops its own process (SIGSTOP), so a freeze always lands between effect and commit.
    """

    def __init__(self, path: str | None, slot: int) -> None:
        self.slot = slot
        self._map: mmap.mmap | None = None
        if path:
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), 0)

    def set_busy(self, busy: bool) -> None:
        if self._map is not None:
            self._map[self.slot] = 1 if busy else 0

    def freeze_if_asked(self) -> None:
        if self._map is not None and self._map[FREEZE_OFFSET + self.slot]:
            self._map[FREEZE_OFFSET + self.slot] = 0
            os.kill(os.getpid(), signal.SIGSTOP)  # until the supervisor's SIGCONT


def failing_registry(
    failure_rate: float,
    handler_delay_ms: float,
    rng: random.Random,
    flags: SharedFlags | None = None,
) -> HandlerRegistry:
    """`default_registry()`, each handler wrapped to fail at `failure_rate` after its writes."""
    builtin = default_registry()
    registry = HandlerRegistry()

    def wrap(inner: Handler) -> Handler:
        def handler(ctx: HandlerContext) -> None:
            inner(ctx)  # the effect is written, not committed
            if flags is not None:
                flags.set_busy(True)
                flags.freeze_if_asked()
            try:
                if handler_delay_ms > 0:
                    time.sleep(rng.uniform(0, handler_delay_ms) / 1000)
            finally:
                if flags is not None:
                    flags.set_busy(False)
            if rng.random() < failure_rate:
                raise InjectedFailure(INJECTED)

        return handler

    for provider, event_type in builtin.event_types():
        inner = builtin.get(provider, event_type)
        assert inner is not None
        registry.register(provider, event_type, wrap(inner))
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak.worker", description=__doc__)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--handler-delay-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--busy-file", default=None, help="shared with the supervisor (above)")
    parser.add_argument("--slot", type=int, default=0, help="this worker's byte in --busy-file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = load_settings()
    flags = SharedFlags(args.busy_file, args.slot)
    rng = random.Random(args.seed)
    registry = failing_registry(args.failure_rate, args.handler_delay_ms, rng, flags)
    engine = store.make_engine(
        settings.database_url,
        idle_in_transaction_timeout=settings.processing_timeout,
        pool_size=2,
        max_overflow=2,
    )
    worker = Worker(
        engine, settings, registry=registry, batch=args.batch, poll_interval=args.poll_interval
    )
    worker.install_signal_handlers()
    logging.getLogger("soak.worker").info(
        "soak worker started (failure rate %s, handler delay up to %s ms)",
        args.failure_rate,
        args.handler_delay_ms,
    )
    try:
        stats = worker.run()
    finally:
        engine.dispose()
    counts = ", ".join(f"{o.value} {n}" for o, n in sorted(stats.outcomes.items())) or "nothing"
    print(f"soak worker stopped after {stats.polls} polls: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

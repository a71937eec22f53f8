"""The Celery app with a Stripe handler that, on an event's first attempt, writes the payment, then
records its process id in `$PP_TEST_HANDLER_PID_FILE` and hangs, so a test can SIGKILL that pool
process mid-task. Later attempts run the built-in handler and return.

Run as `celery -A payments_pipeline_tests.celery_slow_app worker -Q <queue>` (Celery's own command
line, with the product's app and settings: only the handlers differ).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from payments_pipeline.dispatch.celery import app, use_registry
from payments_pipeline.handlers import HandlerContext, default_registry
from payments_pipeline.models import Provider

PID_FILE_ENV = "PP_TEST_HANDLER_PID_FILE"
_builtin = default_registry()


def write_then_hang_on_first_attempt(ctx: HandlerContext) -> None:
    handler = _builtin.get(ctx.event.provider, ctx.event.event_type)
    assert handler is not None
    handler(ctx)
    if ctx.attempt == 1:
        target = Path(os.environ[PID_FILE_ENV])
        partial = target.with_suffix(".partial")
        partial.write_text(str(os.getpid()))
        partial.replace(target)  # the test never reads half a pid
        time.sleep(120)


_registry = default_registry()
_registry.register(Provider.STRIPE, "payment_intent.succeeded", write_then_hang_on_first_attempt)
use_registry(_registry)

__all__ = ["app"]

"""A worker process for tests: its Stripe handler writes the payment, then hangs, so the test can
SIGKILL it mid-event. Run as `python -m payments_pipeline_tests.slow_worker DATABASE_URL`."""

from __future__ import annotations

import sys
import time

from payments_pipeline import store
from payments_pipeline.config import Settings
from payments_pipeline.handlers import HandlerContext, HandlerRegistry, default_registry
from payments_pipeline.models import Provider
from payments_pipeline.worker import Worker


def main(url: str) -> None:
    builtin = default_registry()
    registry = HandlerRegistry()

    def write_then_hang(ctx: HandlerContext) -> None:
        handler = builtin.get(ctx.event.provider, ctx.event.event_type)
        assert handler is not None
        handler(ctx)
        print("in-handler", flush=True)
        time.sleep(120)

    registry.register(Provider.STRIPE, "payment_intent.succeeded", write_then_hang)
    engine = store.make_engine(url)
    Worker(engine, Settings(database_url=url), registry=registry, poll_interval=0.05).run()


if __name__ == "__main__":
    main(sys.argv[1])

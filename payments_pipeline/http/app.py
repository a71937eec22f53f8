"""The HTTP receiver: providers deliver webhooks here, the gate records and claims them.

`create_app(settings)` returns the Starlette app that `payments-pipeline serve` runs on uvicorn:

- `POST /webhooks/stripe`, `POST|GET /webhooks/monetbil`: read and verify the delivery
  (`http.webhooks`), run `gate.receive`, answer 200 with the gate's outcome. The response goes out
  once the gate has committed; a claimed event is then queued for processing
  (`http.dispatching`), so processing never holds the provider's connection. Anything that goes
  wrong after the response is the `dispatch_lost` case the sweep recovers.
- `GET /healthz`: 200 when the database answers, 503 otherwise.
- `GET /metrics`: the Prometheus text exposition (`metrics`): deliveries answered by provider,
  outcome and status code, the gate's time, failed hand-offs (`http.metrics`); fixed label sets
  only. With `serve --workers N` one scrape sums every worker process (`metrics_dir`).

Every refusal is a JSON `{"error", "detail"}` with a status code that tells the provider whether
to retry (`docs/receiver.md` has the table); nothing is stored before the gate, and no response or
log line carries a payload, a signature or a secret. The app holds no SQL: it calls the providers,
the gate and `store.ping`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio
import sqlalchemy as sa
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import gate, metrics, store
from ..config import Settings, load_settings
from ..dispatch import Dispatcher, InlineDispatcher, build_dispatcher
from ..errors import database_error
from ..gate import ReceiveResult
from ..models import PROVIDERS, DispatchMode, Provider
from .dispatching import DEFAULT_BATCH_SIZE, DispatchQueue
from .errors import ErrorCode, Refusal, error_response
from .logs import install_access_log_redaction
from .metrics import CUSTOM_DISPATCHER, receiver_metrics
from .webhooks import Delivery, confirm_monetbil, read_monetbil, read_stripe

log = logging.getLogger(__name__)

HEALTH_THREADS = 2
# A scrape reads every worker process's metrics files: one thread, never the event loop.
METRICS_THREADS = 1
HEALTH_TIMEOUT_SECONDS = 3.0
# On shutdown, how long queued events may still be handed on before the rest is left to the sweep.
DRAIN_SECONDS = 10.0

Reader = Callable[[Request, Settings], Awaitable[Delivery]]
UNKNOWN_PROVIDER_DETAIL = "unknown provider: this receiver serves " + ", ".join(
    p.value for p in PROVIDERS
)
ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    Provider.STRIPE.value: ("POST",),
    # Monetbil's query-string variant arrives as a GET (its SDK reads it with parse_str).
    Provider.MONETBIL.value: ("GET", "POST"),
}


class Receiver:
    """The endpoints' shared state: settings, engine, database thread limit, dispatch queue."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        queue: DispatchQueue | None,
        *,
        owns_engine: bool,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.queue = queue
        self._owns_engine = owns_engine
        self.metrics = receiver_metrics()
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        # The gate's transactions run in `settings.gate_threads` threads, each with its pooled
        # connection. A plain executor rather than anyio.to_thread: the hop costs ~20 us of CPU
        # instead of ~65 us (docs/PERFORMANCE.md, receiver section).
        self._gate_threads = ThreadPoolExecutor(settings.gate_threads, thread_name_prefix="gate")

    def _limiter(self, name: str, tokens: int) -> anyio.CapacityLimiter:
        # Created on first use: an anyio limiter needs the running event loop to exist.
        if name not in self._limiters:
            self._limiters[name] = anyio.CapacityLimiter(tokens)
        return self._limiters[name]

    async def stripe(self, request: Request) -> Response:
        return await self._deliver(request, Provider.STRIPE, read_stripe)

    async def monetbil(self, request: Request) -> Response:
        return await self._deliver(request, Provider.MONETBIL, read_monetbil)

    async def unknown_provider(self, request: Request) -> Response:
        """`/webhooks/<name>` for a name we do not serve (404), or a provider's endpoint reached
        with the wrong method (405). Neither detail repeats the name from the path: the texts are
        built from our own constants only."""
        name = request.path_params.get("provider")
        for provider in PROVIDERS:
            if name == provider.value:  # a known provider reached with the wrong method
                allowed = ALLOWED_METHODS[provider.value]
                self.metrics.refused(provider, 405, ErrorCode.METHOD_NOT_ALLOWED)
                return error_response(
                    405,
                    ErrorCode.METHOD_NOT_ALLOWED,
                    f"/webhooks/{provider.value} accepts {' or '.join(allowed)}",
                    {"Allow": ", ".join(allowed)},
                )
        self.metrics.refused(None, 404, ErrorCode.UNKNOWN_PROVIDER)  # never the name itself
        return error_response(404, ErrorCode.UNKNOWN_PROVIDER, UNKNOWN_PROVIDER_DETAIL)

    async def metrics_text(self, request: Request) -> Response:
        """Prometheus' scrape: counters and histograms with fixed label sets, nothing from a
        request. Not a delivery, so not counted as one."""
        body = await anyio.to_thread.run_sync(
            metrics.scrape, limiter=self._limiter("metrics", METRICS_THREADS)
        )
        return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def healthz(self, request: Request) -> Response:
        ok = False
        with anyio.move_on_after(HEALTH_TIMEOUT_SECONDS):
            try:
                # Its own two threads: pings stuck on a hung database neither pile up nor take
                # the threads deliveries need.
                await anyio.to_thread.run_sync(
                    self._ping,
                    limiter=self._limiter("health", HEALTH_THREADS),
                    abandon_on_cancel=True,
                )
                ok = True
            except sa.exc.SQLAlchemyError as exc:
                log.warning("health check: database unavailable: %s", database_error(exc))
        if ok:
            return JSONResponse({"status": "ok"})
        return error_response(503, ErrorCode.DATABASE_UNAVAILABLE, "the database does not answer")

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            store.ping(conn)

    async def _deliver(self, request: Request, provider: Provider, reader: Reader) -> Response:
        try:
            delivery = await reader(request, self.settings)
            await confirm_monetbil(delivery, self.settings)
            # A cancelled request stops waiting, but a started gate transaction runs to its end
            # (if its answer is then lost, the provider retries and the sweep recovers the claim).
            started = time.perf_counter()
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._gate_threads, self._receive, delivery
                )
            finally:
                self.metrics.gate_time(provider, time.perf_counter() - started)
        except Refusal as refusal:
            _log_refusal(provider, refusal, request)
            self.metrics.refused(provider, refusal.status, refusal.error)
            return refusal.response()
        except sa.exc.SQLAlchemyError as exc:
            log.error(
                "webhook not recorded provider=%s: database unavailable: %s",
                provider.value,
                database_error(exc),
            )
            self.metrics.refused(provider, 503, ErrorCode.DATABASE_UNAVAILABLE)
            return error_response(
                503, ErrorCode.DATABASE_UNAVAILABLE, "the delivery could not be recorded; retry"
            )
        except Exception as exc:  # a bug: answer without a traceback that could quote the body
            log.error(
                "webhook failed provider=%s: unexpected %s", provider.value, type(exc).__name__
            )
            self.metrics.refused(provider, 500, ErrorCode.INTERNAL_ERROR)
            return error_response(500, ErrorCode.INTERNAL_ERROR, "unexpected error; retry later")
        background = None
        if result.should_dispatch and self.queue is not None:
            background = BackgroundTask(self.queue.submit, result.event)
        self.metrics.answered(provider, result.outcome)
        return JSONResponse(
            {"outcome": result.outcome.value, "event_id": result.event.id},
            background=background,
        )

    def _receive(self, delivery: Delivery) -> ReceiveResult:
        try:
            return gate.receive(
                self.engine,
                provider=delivery.provider,
                provider_event_id=delivery.provider_event_id,
                event_type=delivery.event_type,
                payload=delivery.payload,
                minutes=self.settings.stuck_requeue_minutes,
            )
        except ValueError as exc:  # the gate's own key checks; the readers check them first
            raise Refusal(400, ErrorCode.MALFORMED_PAYLOAD, str(exc)) from None

    def close(self) -> None:
        """Let queued events be handed on (up to `DRAIN_SECONDS`), then release the engine."""
        self._gate_threads.shutdown(wait=True)
        if self.queue is not None:
            self.queue.close(DRAIN_SECONDS)
        if self._owns_engine:
            self.engine.dispose()


def _log_refusal(provider: Provider, refusal: Refusal, request: Request) -> None:
    client = request.client.host if request.client else "-"
    log.warning(
        "webhook refused provider=%s client=%s status=%s error=%s: %s",
        provider.value,
        client,
        refusal.status,
        refusal.error.value,
        refusal.log_detail,
    )


_HTTP_ERRORS: dict[int, tuple[ErrorCode, str]] = {
    404: (ErrorCode.NOT_FOUND, "no such endpoint: see /webhooks/stripe, /webhooks/monetbil"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "method not allowed here: see the Allow header"),
}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method), in our JSON shape.

    The detail is ours, fixed per status: Starlette's `exc.detail` is a plain phrase today, but
    nothing here should depend on a library never putting the path into it.
    """
    assert isinstance(exc, HTTPException)
    code, detail = _HTTP_ERRORS.get(
        exc.status_code, (ErrorCode.MALFORMED_PAYLOAD, "the request cannot be served")
    )
    return error_response(exc.status_code, code, detail, dict(exc.headers or {}))


def create_app(
    settings: Settings, engine: Engine | None = None, dispatcher: Dispatcher | None = None
) -> Starlette:
    """The receiver app. Without `engine` it opens (and at shutdown disposes of) its own on
    `settings.database_url`; without `dispatcher` claimed events go where
    `settings.receiver_mode` says (`_dispatch_queue`)."""
    owns_engine = engine is None
    if engine is None:
        engine = store.make_engine(
            settings.database_url,
            # No pre-ping (one round trip per request): a connection the database dropped fails
            # that one request with 503, the provider retries, and SQLAlchemy discards the pool.
            pool_pre_ping=False,
            idle_in_transaction_timeout=settings.processing_timeout,
            pool_size=settings.gate_threads + HEALTH_THREADS + settings.dispatch_threads,
            max_overflow=0,
        )
    if dispatcher is None:
        queue = _dispatch_queue(settings.receiver_mode, engine, settings)
    else:
        queue = DispatchQueue(dispatcher, threads=settings.dispatch_threads, mode=CUSTOM_DISPATCHER)
    receiver = Receiver(settings, engine, queue, owns_engine=owns_engine)
    install_access_log_redaction()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if queue is not None:
            queue.start()
        yield
        await anyio.to_thread.run_sync(receiver.close)
        metrics.process_exiting()

    app = Starlette(
        routes=[
            Route("/webhooks/stripe", receiver.stripe, methods=ALLOWED_METHODS["stripe"]),
            Route("/webhooks/monetbil", receiver.monetbil, methods=ALLOWED_METHODS["monetbil"]),
            Route(
                "/webhooks/{provider}",
                receiver.unknown_provider,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
            Route("/healthz", receiver.healthz, methods=["GET"]),
            Route("/metrics", receiver.metrics_text, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    return app


def _dispatch_queue(mode: DispatchMode, engine: Engine, settings: Settings) -> DispatchQueue | None:
    """The threads that hand claimed events on after the response, for the engines that send
    them somewhere; None for the engines whose claim is all there is to do."""
    match mode:
        # inline: processed in this process; celery: published. Both on the queue's threads, so
        # neither processing nor a slow or down broker delays a response.
        case DispatchMode.INLINE:
            # Processing in the server is counted like a worker's (label engine="inline").
            inline = InlineDispatcher(
                engine, settings, on_outcome=metrics.processing(DispatchMode.INLINE).record
            )
            return DispatchQueue(inline, threads=settings.dispatch_threads, mode=mode.value)
        case DispatchMode.CELERY:
            # The claims of a few milliseconds go out as one message (`DispatchQueue`).
            return DispatchQueue(
                build_dispatcher(mode, engine, settings),
                threads=settings.dispatch_threads,
                mode=mode.value,
                batch_size=DEFAULT_BATCH_SIZE,
                coalesce_seconds=settings.dispatch_coalesce_ms / 1000,
            )
        case DispatchMode.TABLE:  # the claimed row is the job: worker processes take it
            return None
        case DispatchMode.NONE:  # intake alone: a sweep or a worker picks the event up later
            return None
    raise ValueError(f"the receiver has no dispatch engine {mode!r}")


def create_app_from_environment() -> Starlette:
    """uvicorn's factory (`serve`, every worker process): settings from the environment."""
    return create_app(load_settings())

"""`payments-pipeline serve`: checks that make a bad start fail in one line, then uvicorn.

uvicorn runs `app.create_app_from_environment` as a factory, in this process (one worker) or
in `workers` spawned processes that each build their own app, engine and dispatch queue. Spawned
processes only inherit the environment, so the options that shape the app (`--dispatch`) are
passed to them as the environment variables `config.load_settings` reads.

Metrics: `serve` makes a private `PROMETHEUS_MULTIPROC_DIR` (`metrics_dir`) before uvicorn starts,
so every worker process (spawned ones inherit it) writes its counters there, and `GET /metrics` on
any of them sums all of them; the directory is removed when `serve` exits. Nothing in this module
imports prometheus-client: with one worker the app runs in this very process, and the library must
first be imported after the directory is set.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn

from payments_pipeline import metrics_dir
from payments_pipeline.config import Settings
from payments_pipeline.models import DispatchMode

from .logs import uvicorn_log_config

log = logging.getLogger(__name__)

APP_FACTORY = "payments_pipeline.http.app:create_app_from_environment"
HTTP_PROTOCOL = "payments_pipeline.http.protocol:HeaderLimitedHttpToolsProtocol"
# How long uvicorn's supervisor waits for a worker process to answer its health ping before it
# kills and replaces it (uvicorn's default is 5 s). A spawned worker first re-imports the CLI
# module (~2 s on an idle 2-core machine) and only then answers; on a busy machine that took
# over 5 s, and workers were killed and respawned in a loop, so `serve` never became healthy.
WORKER_HEALTHCHECK_SECONDS = 30


class ServeError(Exception):
    """The server cannot start; the message is the one line the operator sees."""


def unconfigured_providers(settings: Settings) -> list[str]:
    """One warning per provider whose deliveries will all be refused (400) for lack of a secret."""
    warnings = []
    if not settings.stripe_webhook_secrets:
        warnings.append(
            "STRIPE_WEBHOOK_SECRET is not set: /webhooks/stripe refuses every delivery (400)"
        )
    if not settings.monetbil_service_secret:
        warnings.append(
            "MONETBIL_SERVICE_SECRET is not set: /webhooks/monetbil refuses every delivery (400)"
        )
    return warnings


def check_can_listen(host: str, port: int) -> None:
    """Bind once and let go, so a taken port is one clear line instead of uvicorn's exit later."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None


@dataclass(frozen=True)
class ServeOptions:
    """The `serve` command's options, as uvicorn and the receiver take them."""

    host: str
    port: int
    workers: int
    dispatch: str | None  # overrides PAYMENTS_DISPATCH for the receiver; None keeps it
    access_log: bool
    forwarded_allow_ips: str | None
    log_level: str


def serve(settings: Settings, options: ServeOptions) -> None:
    """Run the receiver until interrupted. Raises `ServeError` before starting if it cannot work."""
    if options.workers < 1:
        raise ServeError(f"--workers must be at least 1, got {options.workers}")
    unconfigured = unconfigured_providers(settings)
    if len(unconfigured) == 2:
        raise ServeError(
            "no provider is configured: set STRIPE_WEBHOOK_SECRET and/or MONETBIL_SERVICE_SECRET"
        )
    for warning in unconfigured:
        log.warning(warning)
    check_can_listen(options.host, options.port)
    mode = settings.receiver_mode if options.dispatch is None else DispatchMode(options.dispatch)
    os.environ["PAYMENTS_RECEIVER_DISPATCH"] = mode.value  # for the worker processes
    log.info(
        "receiver listening on http://%s:%s (workers=%s, dispatch=%s, max body %s bytes, "
        "max headers %s bytes)",
        options.host,
        options.port,
        options.workers,
        mode.value,
        settings.max_body_bytes,
        settings.max_header_bytes,
    )
    with metrics_dir.private_directory():
        _run_uvicorn(settings, options)


def _run_uvicorn(settings: Settings, options: ServeOptions) -> None:
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        log_config=uvicorn_log_config(options.log_level),
        access_log=options.access_log,
        proxy_headers=True,
        forwarded_allow_ips=options.forwarded_allow_ips,
        server_header=False,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        **http_options(settings),
    )


def http_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's HTTP implementation for `serve`: httptools with the header limit
    (`http.protocol`). The limit rides in `h11_max_incomplete_event_size`, which uvicorn hands
    to every worker process with the rest of its config (and which h11 itself would obey).

    The protocol is named by its import path, not passed as the class: a spawned worker unpickles
    its config before it starts answering the supervisor's health pings, and a class would
    be imported right then; a path is imported by `Config.load`, once the worker answers."""
    return {
        "http": HTTP_PROTOCOL,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }

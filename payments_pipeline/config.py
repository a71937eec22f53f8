"""Every environment read of the product, in one place.

`load_settings()` turns the environment into a frozen `Settings`; nothing else in the package reads
`os.environ` (the Dagster resources go through `dg.EnvVar`, which is Dagster's own door onto it).
A bad value raises `ConfigError` with a message that names the variable.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from .models import DispatchMode

DEFAULT_DATABASE_FILE = "payments.sqlite3"
MAX_AGE_DAYS = 7


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


def default_database_url(cwd: Path | None = None) -> str:
    return f"sqlite:///{(cwd or Path.cwd()) / DEFAULT_DATABASE_FILE}"


@dataclass(frozen=True)
class Settings:
    database_url: str
    stuck_requeue_enabled: bool = True
    stuck_requeue_minutes: int = 10
    max_attempts: int = 10
    processing_timeout_minutes: int = 30
    max_backoff_minutes: int = 24 * 60
    max_age_days: int = MAX_AGE_DAYS
    # Several Stripe endpoint secrets may be valid at once while one is rotated.
    stripe_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    monetbil_service_secret: str | None = field(default=None, repr=False)
    # Monetbil's checkPayment confirmation: off unless a URL is configured (no silent network call).
    monetbil_check_payment_url: str | None = None
    dagster_home: str | None = None
    # --- receiver (`payments-pipeline serve`) ---
    # Larger bodies are refused with 413 while the stream is read, never buffered whole.
    max_body_bytes: int = 256 * 1024
    # What the receiver does with a claimed event (`models.DispatchMode` says what each does).
    receiver_dispatch: DispatchMode = DispatchMode.INLINE
    # Threads that process claimed events after the response; a bounded queue feeds them.
    dispatch_threads: int = 4
    # Gate transactions in flight at once per worker process (threads and pooled connections).
    # Few is faster on a nearby database (they share one GIL); a distant one wants more, to
    # overlap round trips (docs/PERFORMANCE.md, receiver section).
    gate_threads: int = 4
    monetbil_check_payment_timeout_seconds: int = 10

    @property
    def processing_timeout(self) -> dt.timedelta:
        """How long an attempt may stay `processing` before the sweep reclaims it; also how long
        a session may idle inside a transaction (`store.make_engine`)."""
        return dt.timedelta(minutes=self.processing_timeout_minutes)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


E = TypeVar("E", bound=StrEnum)


def _choice(env: Mapping[str, str], name: str, choices: type[E], default: E) -> E:
    """The variable's value as a member of `choices`."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    try:
        return choices(raw)
    except ValueError:
        names = ", ".join(c.value for c in choices)
        raise ConfigError(f"{name} must be one of {names}, got {raw!r}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment (or `env`, for tests) into `Settings`."""
    env = os.environ if env is None else env
    secrets = tuple(s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip())
    return Settings(
        database_url=env.get("PAYMENTS_DATABASE_URL", "").strip() or default_database_url(),
        stuck_requeue_enabled=_bool(env, "PAYMENTS_STUCK_REQUEUE_ENABLED", True),
        stuck_requeue_minutes=_int(env, "PAYMENTS_STUCK_REQUEUE_MINUTES", 10),
        max_attempts=_int(env, "PAYMENTS_MAX_ATTEMPTS", 10),
        processing_timeout_minutes=_int(env, "PAYMENTS_PROCESSING_TIMEOUT_MINUTES", 30),
        max_backoff_minutes=_int(env, "PAYMENTS_MAX_BACKOFF_MINUTES", 24 * 60),
        stripe_webhook_secrets=secrets,
        monetbil_service_secret=env.get("MONETBIL_SERVICE_SECRET") or None,
        monetbil_check_payment_url=env.get("MONETBIL_CHECK_PAYMENT_URL") or None,
        dagster_home=env.get("DAGSTER_HOME") or None,
        max_body_bytes=_int(env, "PAYMENTS_MAX_BODY_BYTES", 256 * 1024),
        receiver_dispatch=_choice(
            env, "PAYMENTS_RECEIVER_DISPATCH", DispatchMode, DispatchMode.INLINE
        ),
        dispatch_threads=_int(env, "PAYMENTS_DISPATCH_THREADS", 4),
        gate_threads=_int(env, "PAYMENTS_GATE_THREADS", 4),
        monetbil_check_payment_timeout_seconds=_int(env, "MONETBIL_CHECK_PAYMENT_TIMEOUT", 10),
    )

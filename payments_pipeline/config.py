"""Every environment read of the product, in one place.

`load_settings()` turns the environment into a frozen `Settings`; nothing else in the package reads
`os.environ` (the Dagster resources go through `dg.EnvVar`, which is Dagster's own door onto it).
A bad value raises `ConfigError` with a message that names the variable.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from .models import PROCESSING_DISPATCH_MODES, DispatchMode

DEFAULT_DATABASE_FILE = "payments.sqlite3"
# The first day of the drift's daily partitions unless PAYMENTS_RECONCILE_START_DATE says: the day
# revision 0001 created the `payments` table. No install of the product holds a payment of its own
# from before it, so an earlier day could only show every Stripe payment as `missing_here`. A
# fixed date, never one relative to today: partition keys must not move between two loads.
DEFAULT_RECONCILE_START_DATE = dt.date(2026, 11, 23)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


def default_database_url(cwd: Path | None = None) -> str:
    return f"sqlite:///{(cwd or Path.cwd()) / DEFAULT_DATABASE_FILE}"


@dataclass(frozen=True)
class Settings:
    """Every setting, its default written once, here: `load_settings` and whatever shows or
    bounds a setting (`SweepParams`, the receiver's header limit, the sweep checks' text) read
    it from `DEFAULTS`."""

    database_url: str
    stuck_requeue_enabled: bool = True
    stuck_requeue_minutes: int = 10
    max_attempts: int = 10
    processing_timeout_minutes: int = 30
    max_backoff_minutes: int = 24 * 60
    max_age_days: int = 7
    # Several Stripe endpoint secrets may be valid at once while one is rotated.
    stripe_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    monetbil_service_secret: str | None = field(default=None, repr=False)
    # Monetbil's checkPayment confirmation: off unless a URL is configured (no silent network call).
    monetbil_check_payment_url: str | None = None
    dagster_home: str | None = None
    # --- receiver (`payments-pipeline serve`) ---
    # Larger bodies are refused with 413 while the stream is read, never buffered whole.
    max_body_bytes: int = 256 * 1024
    # Request headers (target, names and values) above this are refused with 431 by the server,
    # before the rest is read (`http.protocol`).
    max_header_bytes: int = 16 * 1024
    # How every door hands a claimed event on (`models.DispatchMode` says what each does).
    dispatch: DispatchMode = DispatchMode.INLINE
    # The receiver's own override (`serve --dispatch`, which may also say `none`); None: `dispatch`.
    receiver_dispatch: DispatchMode | None = None
    celery_broker_url: str = field(default="amqp://guest:guest@127.0.0.1:5672//", repr=False)
    celery_queue: str = "payments_pipeline"
    # Threads that process claimed events after the response; a bounded queue feeds them.
    dispatch_threads: int = 4
    # celery: how long a dispatch thread waits for more claims to publish with the one it took
    # (one message for all, at most `http.dispatching.DEFAULT_BATCH_SIZE`); 0: only those waiting.
    dispatch_coalesce_ms: int = 5
    # Gate transactions in flight at once per worker process (threads and pooled connections).
    # Few is faster on a nearby database (they share one GIL); a distant one wants more, to
    # overlap round trips (docs/PERFORMANCE.md, receiver section).
    gate_threads: int = 4
    monetbil_check_payment_timeout_seconds: int = 10
    # --- reconciliation (`reconcile`) ---
    # A restricted key with read access to Events, PaymentIntents and Charges; never logged.
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_base: str = "https://api.stripe.com"
    # The default status of the hourly reconciliation schedule (with STRIPE_API_KEY set).
    reconcile_enabled: bool = True
    # The first daily partition of `stripe_payment_drift` (UTC).
    reconcile_start_date: dt.date = DEFAULT_RECONCILE_START_DATE

    @property
    def receiver_mode(self) -> DispatchMode:
        """What the receiver does with a claimed event."""
        return DispatchMode(self.receiver_dispatch or self.dispatch)

    @property
    def processing_timeout(self) -> dt.timedelta:
        """How long an attempt may stay `processing` before the sweep reclaims it; also how long
        a session may idle inside a transaction (`store.make_engine`)."""
        return dt.timedelta(minutes=self.processing_timeout_minutes)


# The defaults of every setting (its `database_url` is none: `default_database_url()` depends on
# the working directory).
DEFAULTS = Settings(database_url="")


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


def _choice(env: Mapping[str, str], name: str, choices: Sequence[E]) -> E | None:
    """The variable's value as one of `choices` (members of one StrEnum); None if unset."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    try:
        value = type(choices[0])(raw)
    except ValueError:
        value = None
    if value not in choices:
        names = ", ".join(c.value for c in choices)
        raise ConfigError(f"{name} must be one of {names}, got {raw!r}")
    return value


def dispatch_mode(raw: str, name: str = "PAYMENTS_DISPATCH") -> DispatchMode:
    """`raw` as an engine a sweep, a replay or `name` may name, checked as `load_settings`
    checks PAYMENTS_DISPATCH (the Dagster resource's mode, resolved where the run executes);
    empty: the default engine."""
    return _choice({name: raw}, name, PROCESSING_DISPATCH_MODES) or Settings.dispatch


QUEUE_NAME_RULE = "letters, digits, '.', '_' or '-'"


def is_queue_name(raw: str) -> bool:
    """A queue name: letters, digits, `.`, `_`, `-`, 1 to 200 characters (safe on any broker)."""
    return 0 < len(raw) <= 200 and all(c.isalnum() or c in "._-" for c in raw)


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not is_queue_name(raw):
        raise ConfigError(f"{name} must be {QUEUE_NAME_RULE}, got {raw!r}")
    return raw


def _date(env: Mapping[str, str], name: str, default: dt.date) -> dt.date:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a date such as 2026-11-23, got {raw!r}") from None


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    scheme, _, rest = raw.partition("://")
    if scheme.lower() not in {"http", "https"} or not rest.strip("/"):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment (or `env`, for tests) into `Settings`."""
    env = os.environ if env is None else env
    d = DEFAULTS
    secrets = tuple(s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip())
    return Settings(
        database_url=env.get("PAYMENTS_DATABASE_URL", "").strip() or default_database_url(),
        stuck_requeue_enabled=_bool(env, "PAYMENTS_STUCK_REQUEUE_ENABLED", d.stuck_requeue_enabled),
        stuck_requeue_minutes=_int(env, "PAYMENTS_STUCK_REQUEUE_MINUTES", d.stuck_requeue_minutes),
        max_attempts=_int(env, "PAYMENTS_MAX_ATTEMPTS", d.max_attempts),
        processing_timeout_minutes=_int(
            env, "PAYMENTS_PROCESSING_TIMEOUT_MINUTES", d.processing_timeout_minutes
        ),
        max_backoff_minutes=_int(env, "PAYMENTS_MAX_BACKOFF_MINUTES", d.max_backoff_minutes),
        stripe_webhook_secrets=secrets,
        monetbil_service_secret=env.get("MONETBIL_SERVICE_SECRET") or None,
        monetbil_check_payment_url=env.get("MONETBIL_CHECK_PAYMENT_URL") or None,
        dagster_home=env.get("DAGSTER_HOME") or None,
        max_body_bytes=_int(env, "PAYMENTS_MAX_BODY_BYTES", d.max_body_bytes),
        max_header_bytes=_int(env, "PAYMENTS_MAX_HEADER_BYTES", d.max_header_bytes),
        dispatch=_choice(env, "PAYMENTS_DISPATCH", PROCESSING_DISPATCH_MODES) or d.dispatch,
        receiver_dispatch=_choice(env, "PAYMENTS_RECEIVER_DISPATCH", tuple(DispatchMode)),
        celery_broker_url=env.get("PAYMENTS_CELERY_BROKER_URL", "").strip() or d.celery_broker_url,
        celery_queue=_name(env, "PAYMENTS_CELERY_QUEUE", d.celery_queue),
        dispatch_threads=_int(env, "PAYMENTS_DISPATCH_THREADS", d.dispatch_threads),
        dispatch_coalesce_ms=_int(
            env, "PAYMENTS_DISPATCH_COALESCE_MS", d.dispatch_coalesce_ms, minimum=0
        ),
        gate_threads=_int(env, "PAYMENTS_GATE_THREADS", d.gate_threads),
        monetbil_check_payment_timeout_seconds=_int(
            env, "MONETBIL_CHECK_PAYMENT_TIMEOUT", d.monetbil_check_payment_timeout_seconds
        ),
        stripe_api_key=env.get("STRIPE_API_KEY", "").strip() or None,
        stripe_api_base=_http_url(env, "PAYMENTS_STRIPE_API_BASE", d.stripe_api_base),
        reconcile_enabled=_bool(env, "PAYMENTS_RECONCILE_ENABLED", d.reconcile_enabled),
        reconcile_start_date=_date(env, "PAYMENTS_RECONCILE_START_DATE", d.reconcile_start_date),
    )

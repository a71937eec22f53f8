"""`payments-pipeline`: the command-line door onto the core.

Every failure an operator can cause (bad flag, unknown provider, unreachable or unmigrated
database) ends in one line on stderr starting with `error:` and a non-zero exit, before anything is
written. Logs go to stderr, so `--json` output on stdout stays machine-readable.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from sqlalchemy import Engine

from . import metrics_dir, migrations, store
from .config import QUEUE_NAME_RULE, ConfigError, Settings, is_queue_name, load_settings
from .demo import DEMO_DIR, create_demo_database
from .dismiss import DismissError, DismissResult, clean_reason, dismiss_events
from .dispatch import build_dispatcher
from .drift import DriftError
from .errors import short_error
from .models import DispatchMode, EventStatus
from .providers.currency import exponent
from .providers.errors import PayloadError
from .reconcile import ProviderUnavailable, ReconcileError
from .replay import ByHand, ReplayResult, replay_events
from .status import read_status
from .sweep import SweepParamError, SweepParams, SweepSummary, run_sweep

log = logging.getLogger("payments_pipeline")
_Result = TypeVar("_Result")


class CliError(Exception):
    """A one-line, user-facing failure (exit 1)."""


def _redact(url: str) -> str:
    try:
        return sa.make_url(store.normalize_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def open_database(settings: Settings, *, require_migrated: bool = True) -> Engine:
    """An engine that has answered once (and is at the migration head, unless told otherwise)."""
    try:
        engine = store.make_engine(
            settings.database_url, idle_in_transaction_timeout=settings.processing_timeout
        )
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        raise CliError(f"PAYMENTS_DATABASE_URL is not a usable database URL: {exc}") from None
    try:
        current = migrations.current_revision(engine)
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        raise CliError(
            f"database unreachable at {_redact(settings.database_url)}: {short_error(exc)}"
        ) from None
    if require_migrated and current != migrations.head_revision():
        engine.dispose()
        raise CliError(
            f"database at {_redact(settings.database_url)} is not migrated "
            f"(at {current or 'nothing'}, head is {migrations.head_revision()}): "
            "run `payments-pipeline db upgrade`"
        )
    return engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Logs go to stderr.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """Exactly-once payment webhooks: atomic dispatch gate and requeue sweep."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_level != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # The stripe SDK logs every request and retry at info; our own lines say what matters.
        logging.getLogger("stripe").setLevel(logging.WARNING)
    ctx.obj = load_settings()


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Run the migrations to head."""
    engine = open_database(settings, require_migrated=False)
    try:
        migrations.upgrade(engine)
        click.echo(
            f"database at {_redact(settings.database_url)} is at {migrations.head_revision()}"
        )
    finally:
        engine.dispose()


def _validate_sweep_options(settings: Settings, minutes: int | None, provider: str) -> SweepParams:
    return SweepParams.from_settings(settings, minutes=minutes, provider=provider.lower())


@cli.command("requeue-stuck-webhooks")
@click.option(
    "--minutes",
    type=int,
    default=None,
    help="Stuck threshold (default: PAYMENTS_STUCK_REQUEUE_MINUTES, 10).",
)
@click.option("--provider", default="all", show_default=True, help="all, stripe or monetbil.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--dry-run", is_flag=True, help="Scan and report; claim and write nothing.")
@click.option(
    "--no-dagster",
    is_flag=True,
    help="Run the core sweep directly even when DAGSTER_HOME is set (no Dagster run).",
)
@click.pass_obj
def requeue_stuck_webhooks(
    settings: Settings,
    minutes: int | None,
    provider: str,
    as_json: bool,
    dry_run: bool,
    no_dagster: bool,
) -> None:
    """One sweep: find stuck events, claim them atomically, dispatch them again.

    With DAGSTER_HOME set, the sweep runs as the Dagster job `requeue_stuck_webhooks` in this
    process, so it shows in the UI like any other run (a dry run writes nothing, not even a run).
    """
    params = _validate_sweep_options(settings, minutes, provider)
    engine = open_database(settings)
    if settings.dagster_home and not (dry_run or no_dagster):
        engine.dispose()
        from .defs.launch import run_sweep_job

        _print_summary(
            _as_dagster_run(settings.dagster_home, settings, run_sweep_job, params=params), as_json
        )
        return
    try:
        dispatcher = build_dispatcher(settings.dispatch, engine, settings)
        summary = run_sweep(engine, params, dispatcher, dry_run=dry_run)
    finally:
        engine.dispose()
    _print_summary(summary, as_json)


def _print_summary(summary: SweepSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
    else:
        click.echo(summary.render_text())


def _major(minor: int, currency: str) -> str:
    """`1050` USD -> `10.50`: an amount in minor units as people read it."""
    try:
        digits = exponent(currency)
    except PayloadError:
        return str(minor)
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"


def _age(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {rest % 60}s"


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Counts by provider and status, the oldest stuck event, dead and expired events, live and
    test-mode payments."""
    engine = open_database(settings)
    try:
        report = read_status(engine, settings)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    statuses = list(EventStatus)
    click.echo(f"{'provider':<10}" + "".join(f"{s.value:>12}" for s in statuses))
    for provider, row in report.counts.items():
        click.echo(f"{provider:<10}" + "".join(f"{row[s]:>12}" for s in statuses))
    for provider in sorted(report.oldest_stuck):
        age = _age(report.oldest_stuck_age(provider))
        click.echo(f"oldest stuck {provider} event: created {age} ago")
    if not report.oldest_stuck:
        click.echo("no stuck events")
    click.echo(f"dead events: {report.dead_count}")
    for dead in report.dead_events:
        ref = dead.event
        click.echo(
            f"  #{ref.id} {ref.provider.value} {ref.provider_event_id} {ref.event_type}: "
            f"{dead.last_error}"
        )
    for mode, label in (("live", "live payments"), ("test", "test-mode payments")):
        totals = report.payments[mode]
        counted = ", ".join(f"{s} {n}" for s, n in totals.by_status.items() if n)
        sums = "; ".join(
            f"{what} " + ", ".join(f"{_major(n, c)} {c}" for c, n in sorted(by_currency.items()))
            for what, by_currency in (("received", totals.received), ("refunded", totals.refunded))
            if by_currency
        )
        click.echo(
            f"{label}: {totals.count}"
            + (f" ({counted})" if counted else "")
            + (f"; {sums}" if sums else "")
        )
    expired = sum(report.expired.values())
    if expired:
        click.echo(
            f"expired events (stuck, older than {settings.max_age_days} days, never requeued): "
            f"{expired}"
        )


@cli.command("replay")
@click.argument("event_ids", nargs=-1, type=int, required=True)
@click.pass_obj
def replay(settings: Settings, event_ids: Sequence[int]) -> None:
    """Send dead or processed events, or expired stuck events, round again (audited in
    sweep_runs/sweep_events). With DAGSTER_HOME set, it runs as the Dagster job
    `replay_webhook_events` in this process, so it shows in the UI."""
    params = SweepParams.from_settings(settings)
    engine = open_database(settings)
    if settings.dagster_home:
        engine.dispose()
        from .defs.launch import run_replay_job

        _print_replay(
            _as_dagster_run(settings.dagster_home, settings, run_replay_job, event_ids=event_ids)
        )
        return
    try:
        result = replay_events(
            engine,
            event_ids,
            build_dispatcher(settings.dispatch, engine, settings),
            by=ByHand(params),
        )
    finally:
        engine.dispose()
    _print_replay(result)


def _log_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


def _as_dagster_run(
    dagster_home: str, settings: Settings, launch: Callable[..., _Result], **job_args: Any
) -> _Result:
    """The command as a run of its Dagster job (`launch`, from `defs.launch`), in this process on
    the instance at `dagster_home`, so it shows in the UI; a refused or failed run is one
    `error:` line."""
    from .defs.launch import LaunchError

    try:
        return launch(
            Path(dagster_home),
            database_url=settings.database_url,
            log_level=_log_level(),
            **job_args,
        )
    except LaunchError as exc:
        raise CliError(str(exc)) from None


def _print_replay(result: ReplayResult) -> None:
    after = {s.event.id: s for s in result.after}
    for ref in result.replayed:
        line = f"replayed #{ref.id} {ref.provider.value} {ref.provider_event_id} ({ref.event_type})"
        state = after.get(ref.id)
        if state is not None:
            line += f": {state.status.value}"
            if state.status is not EventStatus.PROCESSED and state.last_error:
                line += f" ({state.last_error})"
        click.echo(line)
    for refusal in result.refused:
        click.echo(f"not replayed #{refusal.event_id}: {refusal.why}")
    click.echo(_audit_line(result.sweep_id, "nothing replayed"))
    if result.refused or result.died_again:
        raise click.exceptions.Exit(1)


def _audit_line(sweep_id: int | None, nothing: str) -> str:
    return f"audit: sweep #{sweep_id}" if sweep_id is not None else f"audit: none ({nothing})"


@cli.command("dismiss")
@click.argument("event_ids", nargs=-1, type=int, required=True)
@click.option(
    "--reason", required=True, help="Why these events are settled (kept in the audit, required)."
)
@click.pass_obj
def dismiss(settings: Settings, event_ids: Sequence[int], reason: str) -> None:
    """Settle dead or expired events by hand: status dismissed (no effect, never swept), audited
    with the reason; the sweep's checks stop counting them. With DAGSTER_HOME set, it runs as the
    Dagster job `dismiss_webhook_events` in this process, so it shows in the UI."""
    clean_reason(reason)  # a blank reason is refused before the database is opened
    params = SweepParams.from_settings(settings)
    engine = open_database(settings)
    if settings.dagster_home:
        engine.dispose()
        from .defs.launch import run_dismiss_job

        _print_dismissal(
            _as_dagster_run(
                settings.dagster_home, settings, run_dismiss_job, event_ids=event_ids, reason=reason
            )
        )
        return
    try:
        result = dismiss_events(engine, event_ids, reason, by=ByHand(params))
    finally:
        engine.dispose()
    _print_dismissal(result)


def _print_dismissal(result: DismissResult) -> None:
    for state in result.dismissed:
        ref = state.event
        click.echo(
            f"dismissed #{ref.id} {ref.provider.value} {ref.provider_event_id} ({ref.event_type})"
        )
    for refusal in result.refused:
        click.echo(f"not dismissed #{refusal.event_id}: {refusal.why}")
    click.echo(_audit_line(result.sweep_id, "nothing dismissed"))
    if result.refused:
        raise click.exceptions.Exit(1)


@cli.group()
def reconcile() -> None:
    """Recover events that never reached the receiver, from the provider's own API."""


@reconcile.command("stripe")
@click.option(
    "--hours",
    type=click.IntRange(min=1),
    default=None,
    help="List the last N hours (up to --until). Default: from where the last reconciliation "
    "stopped, minus 10 minutes (72 hours back the first time).",
)
@click.option("--since", default=None, help="Start of the window: an ISO date or time (UTC).")
@click.option("--until", default=None, help="End of the window (default: now).")
@click.option(
    "--types",
    default=None,
    help="Comma-separated event types (default: every type a handler applies).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--dry-run", is_flag=True, help="List what would be recovered; write nothing.")
@click.pass_obj
def reconcile_stripe_command(
    settings: Settings,
    hours: int | None,
    since: str | None,
    until: str | None,
    types: str | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """List Stripe's events created in a window (the Events API) and take in, through the gate,
    those that never reached the receiver; audited as a sweep_runs row of kind reconcile."""
    from .reconcile import parse_time, parse_types, reconcile_stripe_api, stripe_key

    wanted = parse_types(types)
    start = parse_time(since, "--since") if since is not None else None
    end = parse_time(until, "--until") if until is not None else None
    stripe_key(settings)  # a missing key is refused before the database is opened
    engine = open_database(settings)
    try:
        result = reconcile_stripe_api(
            engine,
            settings,
            build_dispatcher(settings.dispatch, engine, settings),
            since=start,
            until=end,
            hours=hours,
            types=wanted,
            dry_run=dry_run,
        )
    finally:
        engine.dispose()
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else result.render_text())


@reconcile.command("monetbil")
@click.argument("transaction_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--dry-run", is_flag=True, help="Ask checkPayment and report; write nothing.")
@click.pass_obj
def reconcile_monetbil_command(
    settings: Settings, transaction_ids: Sequence[str], as_json: bool, dry_run: bool
) -> None:
    """Ask Monetbil's checkPayment about each transaction and take in, through the gate, the
    final statuses we never received; audited as a sweep_runs row of kind reconcile."""
    from .providers.monetbil_check import check_payment
    from .reconcile import parse_transaction_ids, reconcile_monetbil

    ids = parse_transaction_ids(transaction_ids)
    url = settings.monetbil_check_payment_url
    if not url:
        raise ConfigError(
            "MONETBIL_CHECK_PAYMENT_URL is not set: a Monetbil reconciliation asks checkPayment "
            "(https://api.monetbil.com/payment/v1/checkPayment)"
        )
    timeout = settings.monetbil_check_payment_timeout_seconds
    engine = open_database(settings)
    try:
        result = reconcile_monetbil(
            engine,
            lambda tx: check_payment(url, tx, timeout=timeout),
            build_dispatcher(settings.dispatch, engine, settings),
            ids,
            minutes=settings.stuck_requeue_minutes,
            dry_run=dry_run,
        )
    finally:
        engine.dispose()
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else result.render_text())


@cli.group("drift")
def drift_group() -> None:
    """Compare our payments with the provider's, one day at a time."""


@drift_group.command("stripe")
@click.option("--date", "day", required=True, help="The UTC day, YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every difference).")
@click.pass_obj
def drift_stripe(settings: Settings, day: str, as_json: bool) -> None:
    """Stripe's PaymentIntents (and legacy charges) created on DAY against our payments rows:
    missing_here, status, amount_received, amount_refunded, currency, livemode."""
    from .drift import parse_day, stripe_drift
    from .providers.stripe_api import StripeApi, StripeApiError, StripePayments
    from .reconcile import stripe_key

    date = parse_day(day)
    key = stripe_key(settings)
    engine = open_database(settings)
    try:
        with StripeApi(key, settings.stripe_api_base) as api:
            report = stripe_drift(engine, StripePayments(api), date)
    except StripeApiError as exc:
        raise ProviderUnavailable(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.render_text())


@cli.command("demo")
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(DEMO_DIR),
    show_default=True,
    help="Where the demo database goes (replaced on every run).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the sweep summary as JSON.")
@click.pass_obj
def demo(settings: Settings, directory: Path, as_json: bool) -> None:
    """Create a local SQLite database with stuck events of both providers and run one sweep.

    The sweep runs as the Dagster job, in this process, on the Dagster home
    `<directory>/dagster_home` (the repo's dagster_home/dagster.yaml; its run history is kept).
    """
    from .defs.launch import LaunchError, prepare_demo_home, run_sweep_job, ui_command

    engine, path = create_demo_database(directory)
    engine.dispose()
    database_url = f"sqlite:///{path.resolve()}"
    demo_settings = Settings(database_url=database_url, max_attempts=settings.max_attempts)
    try:
        home = prepare_demo_home(directory)
        # A first look processes what it claims, in this process, whatever PAYMENTS_DISPATCH
        # the shell exports: the run's `dispatcher` resource is told so in its run config.
        summary = run_sweep_job(
            home,
            database_url=database_url,
            params=SweepParams.from_settings(demo_settings),
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            dispatch=DispatchMode.INLINE,
        )
    except LaunchError as exc:
        raise CliError(str(exc)) from None
    _print_summary(summary, as_json)
    if not as_json:
        click.echo(f"\ndemo database: {path.resolve()}")
        click.echo(
            f"inspect it: PAYMENTS_DATABASE_URL=sqlite:///{path.resolve()} "
            f"{Path(sys.executable).with_name('payments-pipeline')} status"
        )
        click.echo(f"see the run in the Dagster UI: {ui_command(home, database_url)}")


def _queue_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not is_queue_name(value):
        raise click.BadParameter(f"must be {QUEUE_NAME_RULE}, got {value!r}")
    return value


# Each engine's own options; naming one under the other engine is refused, never ignored.
_TABLE_OPTIONS = ("batch", "poll_interval")
_CELERY_OPTIONS = ("concurrency", "queue")


def _bounded(name: str, kind: click.ParamType, default: float | None, text: str) -> Any:
    """A numeric option with its range checked by click (one `error:` line when out of it)."""
    return click.option(
        name, type=kind, default=default, show_default=default is not None, help=text
    )


@cli.command("worker")
@_bounded("--batch", click.IntRange(min=1), 50, "table: events taken per poll.")
@_bounded(
    "--poll-interval",
    click.FloatRange(min=0.01),
    0.5,
    "table: seconds between polls when the queue is empty.",
)
@_bounded(
    "--concurrency",
    click.IntRange(min=1),
    None,
    "celery: pool processes (default: Celery's, one per CPU).",
)
@click.option(
    "--queue",
    default=None,
    callback=_queue_name,
    help="celery: the queue to consume (default: PAYMENTS_CELERY_QUEUE).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics (every process of this worker) on this port (default: off).",
)
@click.option(
    "--metrics-host",
    default=None,
    help="The address --metrics-port listens on (default 127.0.0.1).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    batch: int,
    poll_interval: float,
    concurrency: int | None,
    queue: str | None,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Process dispatched events until SIGTERM/SIGINT, with the engine PAYMENTS_DISPATCH names
    (`table`: take claimed rows from the table; `celery`: a Celery worker on the queue; run
    several of either). With --metrics-port, serve their Prometheus metrics."""
    settings: Settings = ctx.obj
    mode = settings.dispatch
    if mode is DispatchMode.INLINE:
        raise CliError(
            "PAYMENTS_DISPATCH is inline: events are processed where they are claimed, so there "
            "is nothing for a worker to do; set PAYMENTS_DISPATCH=table or celery to run workers"
        )
    foreign = _CELERY_OPTIONS if mode is DispatchMode.TABLE else _TABLE_OPTIONS
    for name in foreign:
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            option = "--" + name.replace("_", "-")
            raise CliError(f"{option} is not an option of the {mode.value} worker")
    if metrics_host is not None and metrics_port is None:
        raise CliError("--metrics-host needs --metrics-port")
    with ExitStack() as stack:
        if metrics_port is not None:
            # Before anything imports prometheus-client: its mode is chosen at import.
            stack.enter_context(metrics_dir.private_directory())
        endpoint = None if metrics_port is None else (metrics_host or "127.0.0.1", metrics_port)
        if mode is DispatchMode.CELERY:
            _celery_worker(settings, queue or settings.celery_queue, concurrency, endpoint)
            return
        _table_worker(settings, batch, poll_interval, endpoint, stack)


def _metrics_endpoint(endpoint: tuple[str, int] | None, stack: ExitStack) -> None:
    """Start `worker --metrics-port`'s endpoint, stopped with `stack`."""
    if endpoint is None:
        return
    from .worker import MetricsEndpoint, WorkerStartError

    try:
        served = MetricsEndpoint(*endpoint)
    except WorkerStartError as exc:
        raise CliError(str(exc)) from None
    stack.callback(served.close)


def _table_worker(
    settings: Settings,
    batch: int,
    poll_interval: float,
    endpoint: tuple[str, int] | None,
    stack: ExitStack,
) -> None:
    engine = open_database(settings)
    stack.callback(engine.dispose)
    _metrics_endpoint(endpoint, stack)
    from .worker import Worker

    runner = Worker(engine, settings, batch=batch, poll_interval=poll_interval)
    runner.install_signal_handlers()
    log.info("worker started (batch %s, poll every %ss)", batch, poll_interval)
    stats = runner.run()
    counts = ", ".join(f"{o.value} {n}" for o, n in sorted(stats.outcomes.items())) or "nothing"
    click.echo(f"worker stopped after {stats.polls} polls: {counts}")


def _celery_worker(
    settings: Settings, queue: str, concurrency: int | None, endpoint: tuple[str, int] | None
) -> None:
    from .worker import WorkerStartError, run_celery_worker

    # Each pool process opens its own engine; this one only proves the database is usable.
    open_database(settings).dispose()
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    try:
        code = run_celery_worker(
            settings, queue=queue, concurrency=concurrency, loglevel=level, metrics=endpoint
        )
    except WorkerStartError as exc:
        raise CliError(str(exc)) from None
    if code:
        raise click.exceptions.Exit(code)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
)
@click.option(
    "--dispatch",
    type=click.Choice(["inline", "table", "celery", "none"]),
    default=None,
    help="Overrides PAYMENTS_DISPATCH for the receiver. inline: process claimed events after "
    "answering; table: claim only, `payments-pipeline worker` processes take them from the table; "
    "celery: publish a task after answering, Celery workers process it; none: claim only, the "
    "sweep processes them later (to measure the door alone).",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option(
    "--forwarded-allow-ips",
    default=None,
    help="Proxies trusted for X-Forwarded-For/-Proto (default 127.0.0.1).",
)
@click.pass_obj
def serve(settings: Settings, **options: Any) -> None:
    """The HTTP receiver: signed Stripe and Monetbil deliveries through the gate."""
    from .http import server

    open_database(settings).dispose()  # unreachable or unmigrated: one line, before listening
    log_level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    try:
        server.serve(settings, server.ServeOptions(**options, log_level=log_level))
    except server.ServeError as exc:
        raise CliError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: turns every expected failure into one `error:` line and an exit code."""
    try:
        # With standalone_mode=False click returns an Exit's code instead of raising it.
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="payments-pipeline",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (ConfigError, SweepParamError, ReconcileError, DismissError, DriftError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except (CliError, ProviderUnavailable) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except sa.exc.DBAPIError as exc:
        click.echo(f"error: database error: {short_error(exc)}", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

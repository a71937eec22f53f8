"""Group `webhook_reconciliation`: recover what never reached the receiver (`payments_pipeline.
reconcile`), as audited runs.

- Job `reconcile_stripe_events` materializes `recovered_webhook_events`: Stripe's events created in
  a window, listed through the Events API, those we lacked taken in through the gate. Its check
  `no_missed_deliveries` warns when anything was recovered: deliveries failed in that window.
  The window is the default (from where the reconciled history stops) unless the launchpad says
  otherwise: `ops: {recovered_webhook_events: {config: {hours: 24}}}`, or `since`/`until`.
- Schedule `reconcile_stripe_events_hourly` runs it at minute 17 of every hour (off the sweep's
  five-minute marks), by default when `PAYMENTS_RECONCILE_ENABLED` is true and `STRIPE_API_KEY`
  is set; its description says why when it is stopped.
- Job `reconcile_monetbil_payments` (config `transaction_ids`) asks checkPayment about each.

Both jobs carry the tag `payments_pipeline/reconcile`, which the shipped instance configs limit
to one run at a time. A failure (a refused key, an unreachable API, a bad window) fails the run
with the same one sentence the CLI prints, before anything is written; the key is never shown.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from ..config import Settings, load_settings
from ..models import SweepOutcome
from ..providers.monetbil_check import check_payment
from ..providers.stripe_api import StripeApiError
from ..reconcile import (
    MonetbilOutcome,
    MonetbilReconciliation,
    ProviderUnavailable,
    ReconcileError,
    StripeReconciliation,
    parse_time,
    parse_types,
    reconcile_monetbil,
    reconcile_stripe_api,
)
from .jobs import ACTIVE_STATUSES, describe_run
from .resources import PaymentsDatabase, PaymentsDispatcher
from .tables import table
from .tags import RECONCILE_TAG, tag_found, trigger_from_tags

GROUP = "webhook_reconciliation"
RECOVERED = dg.AssetKey("recovered_webhook_events")
CHECK_NAME = "no_missed_deliveries"
STRIPE_JOB = "reconcile_stripe_events"
MONETBIL_JOB = "reconcile_monetbil_payments"
SCHEDULE_NAME = "reconcile_stripe_events_hourly"
CRON = "17 * * * *"
SHOWN = 50  # rows of a table on the run page; the audit holds them all


def _reconcile_job(provider: str) -> dict[str, Any]:
    """What both reconciliation jobs are: in process, tagged `RECONCILE_TAG` with the provider
    (the shipped instance configs run one such run at a time), an hour at most."""
    return {
        "executor_def": dg.in_process_executor,
        "tags": {RECONCILE_TAG: provider, "dagster/max_runtime": "3600"},
    }


class StripeWindow(dg.Config):
    """The launchpad's override of the listed window; all empty: the default window."""

    hours: int | None = Field(
        default=None, description="List the last N hours up to `until` (instead of since)."
    )
    since: str | None = Field(
        default=None, description="Start of the window, an ISO date or time (UTC)."
    )
    until: str | None = Field(default=None, description="End of the window (default: now).")
    types: list[str] = Field(
        default_factory=list,
        description="Event types to take in (default: every type a handler applies).",
    )


def failure(exc: Exception) -> dg.Failure:
    """The run fails with the one sentence the CLI prints (no stack trace of ours to read)."""
    return dg.Failure(description=str(exc), allow_retries=False)


@dg.asset(
    key=RECOVERED,
    group_name=GROUP,
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=RECOVERED,
            description="Warning: the reconciliation recovered events, so deliveries failed in "
            "its window.",
        )
    ],
    description="Stripe events created in a window, listed through Stripe's Events API; the "
    "ones that never reached the receiver are taken in through the gate and processed.",
)
def recovered_webhook_events(
    context: dg.AssetExecutionContext,
    config: StripeWindow,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    dispatcher: PaymentsDispatcher,
) -> dg.MaterializeResult:
    engine = payments_db.engine
    try:
        result = reconcile_stripe_api(
            engine,
            settings,
            dispatcher.build(engine, settings),
            since=parse_time(config.since, "since") if config.since else None,
            until=parse_time(config.until, "until") if config.until else None,
            hours=config.hours,
            types=parse_types(config.types),
            trigger=trigger_from_tags(context.run.tags),
            dagster_run_id=context.run.run_id,
            on_page=lambda page: context.log.info(
                f"page {page.number}: {page.listed} listed, {page.known} known, "
                f"{page.recovered} recovered"
            ),
        )
    except (ReconcileError, ProviderUnavailable, StripeApiError) as exc:
        raise failure(exc) from None
    context.log.info(result.render_text())
    tag_found(context, stripe_found(result))
    return dg.MaterializeResult(
        metadata=stripe_metadata(result),
        check_results=[no_missed_deliveries(result)],
    )


def stripe_metadata(result: StripeReconciliation) -> dict[str, Any]:
    """The run page: the report first, then the numbers Dagster plots, then the tables."""
    recovered = result.recovered_by_type
    by_type = [
        {
            "event_type": t,
            "listed": n,
            "known": result.known_by_type.get(t, 0),
            "recovered": recovered.get(t, 0),
        }
        for t, n in sorted(result.listed_by_type.items())
    ]
    rows = [
        {
            "id": r.event.id if r.event else None,
            "provider_event_id": r.provider_event_id,
            "event_type": r.event_type,
            "created": r.as_json()["created"],
            "outcome": r.outcome.value,
        }
        for r in result.recovered[:SHOWN]
    ]
    summary = result.as_json()
    return {
        "report": dg.MetadataValue.md(stripe_markdown(result)),
        "sweep_id": result.sweep_id,
        "window_start": dg.MetadataValue.text(summary["since"]),
        "window_end": dg.MetadataValue.text(summary["until"]),
        "pages": result.pages,
        "listed": result.listed,
        "known": result.known,
        "recovered": len(result.recovered),
        "other_types": result.other_types,
        "by_type": table(
            by_type,
            [("event_type", "string"), ("listed", "int"), ("known", "int"), ("recovered", "int")],
        ),
        "recovered_events": table(
            rows,
            [
                ("id", "int"),
                ("provider_event_id", "string"),
                ("event_type", "string"),
                ("created", "string"),
                ("outcome", "string"),
            ],
        ),
    }


def stripe_found(result: StripeReconciliation) -> str:
    """The run's `payments_pipeline/found` tag: `3 missed, 205 known`."""
    return f"{len(result.recovered)} missed, {result.known} known"


def stripe_markdown(result: StripeReconciliation) -> str:
    summary = result.as_json()
    window = f"{summary['since']} .. {summary['until']}"
    n = len(result.recovered)
    lines = []
    if n:
        lines += [
            f"**ATTENTION**: {n} event(s) created in {window} never reached the receiver; "
            "recovered here. Check the webhook endpoint in Stripe's dashboard for that time: is "
            "it enabled, did it answer 2xx, does its signing secret match STRIPE_WEBHOOK_SECRET?",
            "",
        ]
    lines.append(
        f"**Listed {result.listed}** Stripe events created in {window} "
        f"({result.pages} page(s)): {result.known} known, {n} recovered; audit: sweep "
        f"#{result.sweep_id}."
    )
    if result.other_types:
        lines.append(f"{result.other_types} listed event(s) of other types: left out.")
    failed = sum(r.outcome is SweepOutcome.DISPATCH_FAILED for r in result.recovered)
    if failed:
        lines.append(
            f"{failed} recovered event(s) could not be handed to processing: the sweep hands "
            "them on again (dispatch_lost)."
        )
    if n:
        lines += ["", "| id | event | type | created | outcome |", "|---|---|---|---|---|"]
        lines += [
            f"| {r.event.id if r.event else ''} | `{r.provider_event_id}` | {r.event_type} | "
            f"{r.as_json()['created']} | {r.outcome.value} |"
            for r in result.recovered[:SHOWN]
        ]
        if n > SHOWN:
            lines.append(f"\n{SHOWN} of {n} shown.")
    else:
        lines.append("Every listed event had reached us: nothing was missed.")
    return "\n".join(lines)


def no_missed_deliveries(result: StripeReconciliation) -> dg.AssetCheckResult:
    summary = result.as_json()
    window = f"{summary['since']} .. {summary['until']}"
    n = len(result.recovered)
    text = (
        f"{n} event(s) created in {window} never reached the receiver (recovered by this run): "
        "check the webhook endpoint and its signing secret for that time"
        if n
        else f"every event created in {window} had reached the receiver"
    )
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=n == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=text,
        metadata={"recovered": n, "window": dg.MetadataValue.text(window)},
    )


reconcile_stripe_events = dg.define_asset_job(
    name=STRIPE_JOB,
    selection=dg.AssetSelection.assets(RECOVERED),
    description=(
        "Recover Stripe events that never reached the receiver: list the Events API over a "
        "window, take in what we lack through the gate, audit. Override the window per run: "
        "ops: {recovered_webhook_events: {config: {hours: 24}}}."
    ),
    **_reconcile_job("stripe"),
)


def active_reconcile_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """Reconciliation runs queued or in progress on this instance."""
    return list(
        instance.get_run_records(
            dg.RunsFilter(tags={RECONCILE_TAG: "stripe"}, statuses=ACTIVE_STATUSES), limit=5
        )
    )


def why_stopped(settings: Settings) -> str | None:
    """Why the hourly schedule is stopped by default here; None when it runs by default."""
    if not settings.reconcile_enabled:
        return "PAYMENTS_RECONCILE_ENABLED is false"
    if not settings.stripe_api_key:
        return "STRIPE_API_KEY is not set"
    return None


def build_reconcile_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """The hourly schedule, its default status (and the reason it is stopped) from `settings`."""
    stopped = why_stopped(settings)
    description = (
        "Recover Stripe events that never reached the receiver, every hour at minute 17, from "
        "where the last reconciliation stopped."
    )
    if stopped:
        description += f" Stopped by default here: {stopped}."

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=reconcile_stripe_events,
        cron_schedule=CRON,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.STOPPED if stopped else dg.DefaultScheduleStatus.RUNNING
        ),
        description=description,
    )
    def reconcile_hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if not load_settings().stripe_api_key:
            return dg.SkipReason(
                "STRIPE_API_KEY is not set where the schedule runs: nothing to reconcile with"
            )
        active = active_reconcile_runs(context.instance)
        if active:
            return dg.SkipReason(
                f"a reconciliation is still queued or in progress ({describe_run(active[0])}): "
                "the next tick takes over from where it stops"
            )
        return dg.RunRequest()

    return reconcile_hourly


reconcile_schedule = build_reconcile_schedule(load_settings())


# --- Monetbil ------------------------------------------------------------------------------------


@dg.op(
    name="reconcile_monetbil",
    config_schema={
        "transaction_ids": dg.Field(
            [str], description="Monetbil transaction ids to ask checkPayment about."
        )
    },
    out=dg.Out(dg.Nothing),
)
def reconcile_monetbil_op(
    context: dg.OpExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    dispatcher: PaymentsDispatcher,
) -> None:
    """Asks checkPayment about each transaction; takes in the final statuses we lack."""
    url = settings.monetbil_check_payment_url
    engine = payments_db.engine
    timeout = settings.monetbil_check_payment_timeout_seconds
    try:
        if not url:
            raise ReconcileError(
                "MONETBIL_CHECK_PAYMENT_URL is not set: a Monetbil reconciliation asks checkPayment"
            )
        result = reconcile_monetbil(
            engine,
            lambda tx: check_payment(url, tx, timeout=timeout),
            dispatcher.build(engine, settings),
            context.op_config["transaction_ids"],
            minutes=settings.stuck_requeue_minutes,
            trigger=trigger_from_tags(context.run.tags),
            dagster_run_id=context.run.run_id,
        )
    except (ReconcileError, ProviderUnavailable) as exc:
        raise failure(exc) from None
    context.log.info(result.render_text())
    tag_found(context, monetbil_found(result))
    context.add_output_metadata(monetbil_metadata(result))


def monetbil_metadata(result: MonetbilReconciliation) -> dict[str, Any]:
    rows = [r.as_json() for r in result.resolutions[:SHOWN]]
    counts = result.as_json()
    return {
        "report": dg.MetadataValue.md(monetbil_markdown(result)),
        "sweep_id": result.sweep_id,
        "asked": counts["asked"],
        "known": counts["known"],
        "recovered": counts["recovered"],
        "unresolved": counts["unresolved"],
        "transactions": table(
            [{k: ("" if v is None else v) for k, v in r.items()} for r in rows],
            [
                ("transaction_id", "string"),
                ("outcome", "string"),
                ("id", "string"),
                ("provider_event_id", "string"),
                ("event_type", "string"),
                ("dispatch", "string"),
                ("why", "string"),
            ],
        ),
    }


def monetbil_found(result: MonetbilReconciliation) -> str:
    counts = result.as_json()
    found = f"{counts['recovered']} missed, {counts['known']} known"
    return found + (f", {counts['unresolved']} unresolved" if counts["unresolved"] else "")


def monetbil_markdown(result: MonetbilReconciliation) -> str:
    counts = result.as_json()
    unresolved: Sequence[Any] = [
        r for r in result.resolutions if r.outcome == MonetbilOutcome.UNRESOLVED
    ]
    lines = []
    if counts["recovered"] or unresolved:
        parts = []
        if counts["recovered"]:
            parts.append(
                f"{counts['recovered']} notification(s) never reached the receiver, recovered "
                "here: check the notify URL Monetbil calls"
            )
        if unresolved:
            parts.append(f"{len(unresolved)} transaction(s) unresolved (below, with why)")
        lines += ["**ATTENTION**: " + "; ".join(parts) + ".", ""]
    lines.append(
        f"**Asked checkPayment about {counts['asked']}** transaction(s): {counts['known']} "
        f"known, {counts['recovered']} recovered, {counts['unresolved']} unresolved; audit: "
        f"sweep #{result.sweep_id}."
    )
    lines += ["", "| transaction | outcome | event | why |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r.transaction_id} | {r.outcome} | {r.provider_event_id or ''} | {r.why or ''} |"
        for r in result.resolutions[:SHOWN]
    ]
    return "\n".join(lines)


@dg.job(
    name=MONETBIL_JOB,
    description=(
        "Ask Monetbil's checkPayment about the given transactions and take in the final "
        "statuses that never reached the receiver. Run config: ops: {reconcile_monetbil: "
        "{config: {transaction_ids: [TX1, TX2]}}}."
    ),
    **_reconcile_job("monetbil"),
)
def reconcile_monetbil_payments() -> None:
    reconcile_monetbil_op()

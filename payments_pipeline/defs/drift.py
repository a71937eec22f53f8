"""Asset `stripe_payment_drift` (group `webhook_reconciliation`): our payments against Stripe's,
one UTC day per partition (`payments_pipeline.drift`), with its check `payments_match_stripe`
(ERROR on any difference).

Partitions start at PAYMENTS_RECONCILE_START_DATE, a fixed date (partition keys must not move
between two loads of the code location). A backfill of many days from the partitions page is one
run per day; the shipped instance configs let at most 2 backfill runs go at once (Stripe's rate
limits), and a day that fails fails alone. pandas is imported by the comparison at run time only.
"""

import datetime as dt
from typing import Any

import dagster as dg

from ..config import Settings, load_settings
from ..drift import DriftReport, stripe_drift
from ..providers.stripe_api import StripeApi, StripeApiError, StripePayments
from ..reconcile import ReconcileError, stripe_key
from .reconcile import GROUP, SHOWN, failure
from .resources import PaymentsDatabase
from .tables import table
from .tags import tag_found

DRIFT = dg.AssetKey("stripe_payment_drift")
DRIFT_CHECK = "payments_match_stripe"


def drift_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from PAYMENTS_RECONCILE_START_DATE (a fixed date)."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.reconcile_start_date.isoformat(), timezone="UTC"
    )


def build_drift_asset(settings: Settings) -> dg.AssetsDefinition:
    """`stripe_payment_drift`, its partitions starting from `settings` (tests build their own)."""

    @dg.asset(
        key=DRIFT,
        group_name=GROUP,
        kinds={"python", "pandas"},
        partitions_def=drift_partitions(settings),
        check_specs=[
            dg.AssetCheckSpec(
                DRIFT_CHECK,
                asset=DRIFT,
                description="Error: our payments created that day differ from Stripe's.",
            )
        ],
        description="For one UTC day, Stripe's PaymentIntents (and legacy charges) against our "
        "payments rows: missing_here, status, amount_received, amount_refunded, currency, "
        "livemode. Backfill a month from the partitions page; at most 2 days run at once.",
    )
    def stripe_payment_drift(
        context: dg.AssetExecutionContext,
        payments_db: PaymentsDatabase,
        settings: dg.ResourceParam[Settings],
    ) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        try:
            key = stripe_key(settings)
            with StripeApi(key, settings.stripe_api_base) as api:
                report = stripe_drift(payments_db.engine, StripePayments(api), day)
        except (ReconcileError, StripeApiError) as exc:
            raise failure(exc) from None
        context.log.info(report.render_text())
        tag_found(context, drift_found(report))
        return dg.MaterializeResult(
            metadata=drift_metadata(report), check_results=[payments_match_stripe(report)]
        )

    return stripe_payment_drift


def drift_found(report: DriftReport) -> str:
    return (
        f"{report.drifted} of {report.compared} differ"
        if report.differences
        else (f"{report.compared} match")
    )


def drift_metadata(report: DriftReport) -> dict[str, Any]:
    """The partition's run page: the report, numbers plotted across partitions, the first 50."""
    rows = [d.as_json() for d in report.differences[:SHOWN]]
    return {
        "report": dg.MetadataValue.md(drift_markdown(report)),
        "compared": report.compared,
        "in_flight": report.in_flight,
        "drifted": report.drifted,
        **report.by_kind,
        "differences": table(
            rows,
            [("reference", "string"), ("kind", "string"), ("ours", "string"), ("stripe", "string")],
        ),
    }


def drift_markdown(report: DriftReport) -> str:
    day = report.day.isoformat()
    if not report.differences:
        return (
            f"**{report.compared} Stripe payments created on {day} (UTC) match ours** "
            f"({report.in_flight} still in flight at Stripe, not compared)."
        )
    counted = ", ".join(f"{k} {n}" for k, n in report.by_kind.items() if n)
    lines = [
        f"**ATTENTION**: {report.drifted} of {report.compared} Stripe payments created on {day} "
        f"(UTC) differ from ours: {counted}.",
        "",
        "What to do: recover the missed events first, from that day to now (a refund made later "
        "has its event on the day it was made), with the job `reconcile_stripe_events` and this "
        "launchpad config (Stripe keeps events 30 days):",
        "",
        "```yaml",
        "ops:",
        "  recovered_webhook_events:",
        "    config:",
        f'      since: "{day}"',
        "```",
        "",
        f"(or `payments-pipeline reconcile stripe --since {day}`), then materialize this "
        "partition again. What still differs is a handler's doing or a change made at Stripe "
        "without an event we apply (docs/reconcile.md, Drift).",
        "",
        "| reference | kind | ours | Stripe's |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{d.reference}` | {d.kind} | {d.ours or '(no row)'} | {d.stripe} |"
        for d in report.differences[:SHOWN]
    ]
    if len(report.differences) > SHOWN:
        lines.append(f"\n{SHOWN} of {len(report.differences)} shown (`drift stripe --json`).")
    return "\n".join(lines)


def payments_match_stripe(report: DriftReport) -> dg.AssetCheckResult:
    day = report.day.isoformat()
    counted = ", ".join(f"{k} {n}" for k, n in report.by_kind.items() if n)
    return dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=not report.differences,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{report.drifted} payment(s) created on {day} differ from Stripe's ({counted}): run "
            f"reconcile_stripe_events over {day}, then materialize this day again"
            if report.differences
            else f"the {report.compared} Stripe payments created on {day} match ours"
        ),
        metadata={"compared": report.compared, "drifted": report.drifted},
    )


stripe_payment_drift = build_drift_asset(load_settings())

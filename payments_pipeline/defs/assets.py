"""The sweep as four assets, one core phase each (`payments_pipeline.sweep`).

`stuck_webhook_events` (scan) -> `claimed_webhook_events` (claim) -> `dispatched_webhook_events`
(dispatch) -> `requeue_sweep_summary` (close the audit). Each step calls the core, logs its counts
and returns metadata, so the run page tells what the sweep found, claimed, dispatched, skipped and
expired, and why. The phases hand the core's frozen results to each other in memory
(`sweep_io_manager`): a sweep is one run, never resumed from another run's values.

If any step fails after the scan opened the `sweep_runs` row, that row is marked failed.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
from sqlalchemy import Engine

from .. import status
from ..config import Settings
from ..models import DispatchMode, ProcessOutcome
from ..sweep import (
    ClaimResult,
    DispatchResult,
    Scan,
    begin_sweep,
    claim_candidates,
    dispatch_claimed,
    fail_sweep,
    finish_sweep,
)
from . import checks
from . import metadata as md
from .resources import PaymentsDatabase, PaymentsDispatcher
from .sweep_config import SweepSettings
from .sweep_report import sweep_found, sweep_markdown
from .tables import dead_table
from .tags import tag_found, trigger_from_tags

GROUP = "webhook_requeue"
IO_MANAGER = "sweep_io_manager"


@dataclass(frozen=True)
class HandedOn:
    """Which dispatch engine the dispatch step used and (inline only) what processing made of
    the events: the summary's report says it."""

    mode: DispatchMode
    outcomes: Mapping[ProcessOutcome, int] | None


Dispatched = tuple[Scan, ClaimResult, DispatchResult, HandedOn]


@contextmanager
def _failing_marks_sweep(engine: Engine, scan: Scan) -> Iterator[None]:
    """Whatever stops a step after the scan (error, termination) leaves the audit row `failed`."""
    try:
        yield
    except BaseException as exc:
        fail_sweep(engine, scan, exc)
        raise


@dg.asset(group_name=GROUP, io_manager_key=IO_MANAGER, kinds={"python"})
def stuck_webhook_events(
    context: dg.AssetExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    sweep: dg.ResourceParam[SweepSettings],
) -> dg.MaterializeResult[Scan]:
    """Opens the `sweep_runs` row (trigger and Dagster run id) and scans every stuck reason."""
    params = sweep.params(settings)
    scan = begin_sweep(
        payments_db.engine,
        params,
        trigger=trigger_from_tags(context.run.tags),
        dagster_run_id=context.run.run_id,
    )
    with _failing_marks_sweep(payments_db.engine, scan):
        context.log.info(
            f"sweep #{scan.sweep_id} ({scan.trigger.value}, minutes={params.minutes}, "
            f"provider={params.provider}): found {len(scan.candidates)} stuck, "
            f"{sum(scan.expired.values())} expired"
        )
        for provider, n in scan.expired.items():
            context.log.warning(
                f"{n} stuck {provider.value} event(s) older than {params.max_age_days} days: "
                "not requeued, counted as expired"
            )
        metadata = md.scan_metadata(scan)
    return dg.MaterializeResult(value=scan, metadata=metadata)


@dg.asset(group_name=GROUP, io_manager_key=IO_MANAGER, kinds={"python"})
def claimed_webhook_events(
    context: dg.AssetExecutionContext, payments_db: PaymentsDatabase, stuck_webhook_events: Scan
) -> dg.MaterializeResult[tuple[Scan, ClaimResult]]:
    """Claims the candidates with the reasons' conditional UPDATEs; a row that moved is skipped."""
    scan = stuck_webhook_events
    with _failing_marks_sweep(payments_db.engine, scan):
        claim = claim_candidates(payments_db.engine, scan)
        context.log.info(f"claimed {len(claim.claimed)}, skipped {len(claim.skipped)}")
        metadata = md.claim_metadata(scan, claim)
    return dg.MaterializeResult(value=(scan, claim), metadata=metadata)


@dg.asset(group_name=GROUP, io_manager_key=IO_MANAGER, kinds={"python"})
def dispatched_webhook_events(
    context: dg.AssetExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    dispatcher: PaymentsDispatcher,
    claimed_webhook_events: tuple[Scan, ClaimResult],
) -> dg.MaterializeResult[Dispatched]:
    """Hands each claimed event on through the `dispatcher` resource (`PAYMENTS_DISPATCH`;
    inline: processes it here and counts what processing made of it; table: leaves it to the
    workers; celery: publishes it)."""
    scan, claim = claimed_webhook_events
    engine = payments_db.engine
    with _failing_marks_sweep(engine, scan):
        mode = dispatcher.dispatch_mode  # a mode no sweep may use fails the step, row and all
        handing = dispatcher.build(engine, settings)
        dispatch = dispatch_claimed(engine, scan, claim, handing)
        context.log.info(
            f"dispatched {len(dispatch.dispatched)} via {mode.value}, failed {len(dispatch.failed)}"
        )
        if dispatch.failed:
            context.log.error(
                f"{len(dispatch.failed)} claimed event(s) could not be dispatched (each error is "
                f"on this step's stderr); they come back as dispatch_lost after "
                f"{scan.params.minutes} minutes"
            )
        outcomes = handing.outcomes()
        metadata = md.dispatch_metadata(scan, dispatch, mode, outcomes)
    handed = HandedOn(mode, outcomes)
    return dg.MaterializeResult(value=(scan, claim, dispatch, handed), metadata=metadata)


@dg.asset(
    group_name=GROUP, io_manager_key=IO_MANAGER, kinds={"python"}, check_specs=checks.CHECK_SPECS
)
def requeue_sweep_summary(
    context: dg.AssetExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    dispatched_webhook_events: Dispatched,
):  # no return annotation: with check_specs, Dagster would type the handed-on value `Nothing`
    """Closes the `sweep_runs` row, builds the summary every door prints (CLI text and JSON),
    the report at a glance (`sweep`), and evaluates the checks on it."""
    scan, claim, dispatch, handed = dispatched_webhook_events
    with _failing_marks_sweep(payments_db.engine, scan):
        summary = finish_sweep(payments_db.engine, scan, claim, dispatch)
    total = summary.total
    context.log.info(
        f"sweep #{summary.sweep_id}: {total.scanned} scanned, {total.dispatched} dispatched, "
        f"{total.skipped} skipped, {total.expired} expired"
    )
    with payments_db.engine.connect() as conn:  # the sweep is closed: a failure here is the check's
        dead = status.dead_counts(conn, scan.params.providers)
        dead_events = status.list_dead(
            conn, scan.params.providers, max_attempts=settings.max_attempts
        )
        payments = status.payment_totals(conn)
    report = sweep_markdown(
        scan,
        claim,
        dispatch,
        summary,
        mode=handed.mode,
        outcomes=handed.outcomes,
        dead=dead,
        dead_events=dead_events,
    )
    tag_found(context, sweep_found(scan, dispatch, dead))
    return dg.MaterializeResult(
        value=summary,
        metadata={"sweep": dg.MetadataValue.md(report)}
        | md.summary_metadata(summary, dispatch, payments, scan)
        | dead_table(dead_events),
        check_results=checks.evaluate(summary, dead),
    )

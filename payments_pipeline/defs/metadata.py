"""Materialization metadata: what makes a run's page the audit of its sweep.

A plot means one thing: only numbers whose scope is the same in every run are `int`s (Dagster
plots numeric metadata across materializations): one per provider the sweep covered, zeros
included, so every provider's plot has a point per sweep that covered it (and a gap for a sweep
that did not). A total, or a count per reason, sums over the providers *this* run covered: a
stripe-only sweep's `expired` is not the same quantity as an every-provider sweep's, and plotted
together it would drop for no reason. Those are text (`unplotted`): on the run's page, never in a
plot.
Event lists are previews capped at `PREVIEW_ROWS`, with the total stated: the complete list is
`sweep_events` (one row per event, written in the claim's own transaction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from ..models import DispatchMode, ProcessOutcome, Provider, SweepOutcome, SweepReason
from ..status import PaymentTotals
from ..sweep import Candidate, ClaimResult, DispatchResult, Scan, SweepSummary
from .tables import summary_tables, table

PREVIEW_ROWS = 50


def unplotted(count: int) -> dg.TextMetadataValue:
    """A count whose scope is the run's providers: shown as text, so Dagster does not plot it."""
    return dg.MetadataValue.text(str(count))


_EVENT_COLUMNS = (
    ("id", "int"),
    ("provider", "string"),
    ("provider_event_id", "string"),
    ("event_type", "string"),
    ("reason", "string"),
    ("outcome", "string"),
)


def breakdown(
    verb: str, candidates: Sequence[Candidate], providers: Sequence[Provider]
) -> dict[str, Any]:
    """`verb` in total, per provider covered (plotted) and per reason (text: it sums over the
    providers covered): `found`, `found_stripe`, `found_dispatch_lost`, ..."""
    by_provider = Counter(c.event.provider for c in candidates)
    by_reason = Counter(c.reason for c in candidates)
    counts: dict[str, Any] = {verb: unplotted(len(candidates))}
    counts |= {f"{verb}_{p.value}": by_provider[p] for p in providers}
    counts |= {f"{verb}_{r.value}": unplotted(by_reason[r]) for r in SweepReason}
    return counts


def events_preview(
    rows: Sequence[tuple[Candidate, str]], *, sweep_id: int | None, label: str = "events"
) -> dict[str, Any]:
    """The first `PREVIEW_ROWS` events (by id) with their outcome, and a line saying how many."""
    ordered = sorted(rows, key=lambda row: row[0].event.id)
    shown = [
        {
            "id": c.event.id,
            "provider": c.event.provider.value,
            "provider_event_id": c.event.provider_event_id,
            "event_type": c.event.event_type,
            "reason": c.reason.value,
            "outcome": outcome,
        }
        for c, outcome in ordered[:PREVIEW_ROWS]
    ]
    note = f"{len(shown)} of {len(ordered)} shown (lowest ids first)"
    if sweep_id is not None:
        note += f"; all of them: sweep_events where sweep_id = {sweep_id}"
    return {label: table(shown, _EVENT_COLUMNS), f"{label}_shown": dg.MetadataValue.text(note)}


def scan_metadata(scan: Scan) -> dict[str, Any]:
    """What the scan found: the parameters, candidates per provider and reason, the expired."""
    providers = scan.params.providers
    return {
        "sweep_id": scan.sweep_id,
        "trigger": scan.trigger.value,
        "minutes": scan.params.minutes,
        "provider": scan.params.provider,
        "stuck_before": dg.MetadataValue.text(f"{scan.stuck_before.isoformat()}Z"),
        "created_after": dg.MetadataValue.text(f"{scan.created_after.isoformat()}Z"),
        **breakdown("found", scan.candidates, providers),
        "expired": unplotted(sum(scan.expired.values())),
        **{f"expired_{p.value}": scan.expired.get(p, 0) for p in providers},
        **events_preview([(c, "found") for c in scan.candidates], sweep_id=scan.sweep_id),
        **expired_table(scan),
    }


SKIPPED_WHY = "the row changed after the scan, or another sweep holds it"


def claim_metadata(scan: Scan, claim: ClaimResult) -> dict[str, Any]:
    providers = scan.params.providers
    rows = [(c, "claimed") for c in claim.claimed] + [(c, "skipped") for c in claim.skipped]
    why = {"skipped_why": dg.MetadataValue.text(SKIPPED_WHY)} if claim.skipped else {}
    return {
        **breakdown("claimed", claim.claimed, providers),
        **breakdown("skipped", claim.skipped, providers),
        **why,
        **events_preview(rows, sweep_id=scan.sweep_id),
    }


def _per_provider(verb: str, candidates: Sequence[Candidate], providers: Sequence[Provider]):
    by_provider = Counter(c.event.provider for c in candidates)
    return {
        verb: unplotted(len(candidates)),
        **{f"{verb}_{p.value}": by_provider[p] for p in providers},
    }


def dispatch_metadata(
    scan: Scan,
    dispatch: DispatchResult,
    mode: DispatchMode,
    outcomes: Mapping[ProcessOutcome, int] | None,
) -> dict[str, Any]:
    """The dispatch engine, what it was handed and what failed, per provider (per reason: the
    summary's `reasons` table), and (inline only: the step processed them itself) what processing
    made of them."""
    providers = scan.params.providers
    failed = SweepOutcome.DISPATCH_FAILED.value
    rows = [(c, "dispatched") for c in dispatch.dispatched] + [(c, failed) for c in dispatch.failed]
    processed = {}
    if outcomes is not None:
        processed = {f"processing_{o.value}": unplotted(outcomes.get(o, 0)) for o in ProcessOutcome}
    return {
        "engine": dg.MetadataValue.text(mode.value),
        **_per_provider("handed_on", dispatch.dispatched, providers),
        **_per_provider(failed, dispatch.failed, providers),
        **processed,
        **events_preview(rows, sweep_id=scan.sweep_id),
    }


def summary_metadata(
    summary: SweepSummary,
    dispatch: DispatchResult,
    payments: Mapping[str, PaymentTotals],
    scan: Scan,
) -> dict[str, Any]:
    """The seed's totals (text) and per provider (plotted), live and test-mode payments apart
    (plotted: the payments table whatever the sweep covered) (test money is
    never counted as real), the two tables, the events and the oldest expired events."""
    return {
        **{f"payments_{mode}": totals.count for mode, totals in payments.items()},
        **{
            f"payments_{mode}_{s}": n
            for mode, totals in payments.items()
            for s, n in totals.by_status.items()
        },
        "sweep_id": summary.sweep_id,
        **{name: unplotted(n) for name, n in summary.total.as_dict().items()},
        "dispatch_failed": unplotted(len(dispatch.failed)),
        **{
            f"{p.value}_{name}": n
            for p, counts in summary.providers.items()
            for name, n in counts.as_dict().items()
        },
        "duration_seconds": (summary.finished_at - summary.started_at).total_seconds(),
        **summary_tables(summary),
        **events_preview(
            [(Candidate(e.event, e.reason), e.outcome.value) for e in summary.events],
            sweep_id=summary.sweep_id,
        ),
        **expired_table(scan),
    }


_EXPIRED_COLUMNS = (
    ("id", "int"),
    ("provider", "string"),
    ("provider_event_id", "string"),
    ("event_type", "string"),
    ("status", "string"),
    ("created_at", "string"),
)


def expired_table(scan: Scan) -> dict[str, Any]:
    """`expired_events`: the oldest expired events (ids to act on), only when there are some."""
    if not scan.expired_events:
        return {}
    rows = [
        {
            "id": e.event.id,
            "provider": e.event.provider.value,
            "provider_event_id": e.event.provider_event_id,
            "event_type": e.event.event_type,
            "status": e.status.value,
            "created_at": f"{e.created_at.isoformat()}Z",
        }
        for e in scan.expired_events
    ]
    return {"expired_events": table(rows, _EXPIRED_COLUMNS)}

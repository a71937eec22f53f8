"""Asset checks on `requeue_sweep_summary`: what an operator must hear about after a sweep.

The checks are declared on the summary asset (`check_specs`) and evaluated in its step, on the
summary the run just built: three separate check steps would cost the run about a quarter of its
event-log writes (its main overhead) for no gain, since a check needs the run's own summary anyway.
None blocks: the sweep itself succeeded; a failed check flags events the sweep could not
(expired, dead) or did not (dispatch failed) bring back.
"""

from collections.abc import Mapping

import dagster as dg

from ..config import DEFAULTS
from ..models import Provider, SweepOutcome
from ..sweep import SweepSummary
from .metadata import unplotted

SUMMARY = dg.AssetKey("requeue_sweep_summary")
_SHOWN_IDS = 50

CHECK_SPECS = [
    dg.AssetCheckSpec(
        "no_expired_stuck_events",
        asset=SUMMARY,
        description=f"Error: stuck events older than the {DEFAULTS.max_age_days}-day window, "
        "never requeued.",
    ),
    dg.AssetCheckSpec(
        "no_dead_events",
        asset=SUMMARY,
        description="Warning: dead events (a permanent error, or the retry budget spent) "
        "waiting for a replay or a dismissal.",
    ),
    dg.AssetCheckSpec(
        "every_claim_dispatched",
        asset=SUMMARY,
        description="Error: events this sweep claimed but could not hand to processing.",
    ),
]


def _count_check(
    name: str,
    key: str,
    counts: Mapping[str, int],
    severity: dg.AssetCheckSeverity,
    problem: str,
    ok: str,
) -> dg.AssetCheckResult:
    """A check that passes when every provider's count is zero.

    `counts` is keyed by provider value; the description is `"{total} {problem}"` when the check
    fails, `ok` when it passes; the metadata holds the total under `key` (text: its scope is the
    sweep's providers, see `metadata`) and each provider's count under `{key}_{provider}`.
    """
    total = sum(counts.values())
    return dg.AssetCheckResult(
        check_name=name,
        passed=total == 0,
        severity=severity,
        description=f"{total} {problem}" if total else ok,
        metadata={key: unplotted(total), **{f"{key}_{p}": n for p, n in counts.items()}},
    )


def no_expired_stuck_events(summary: SweepSummary) -> dg.AssetCheckResult:
    """Stuck rows older than the window are never requeued: someone has to look at them."""
    return _count_check(
        "no_expired_stuck_events",
        "expired",
        {p.value: c.expired for p, c in summary.providers.items()},
        dg.AssetCheckSeverity.ERROR,
        "stuck event(s) older than the window are never requeued automatically: the oldest are "
        "listed by id in the summary's `sweep` report and `expired_events` (and by "
        "`payments-pipeline status`); once looked at, replay each by id (job "
        "`replay_webhook_events`, `payments-pipeline replay EVENT_ID ...`) or settle it (job "
        "`dismiss_webhook_events`, `payments-pipeline dismiss EVENT_ID ... --reason TEXT`)",
        "no stuck event is older than the window",
    )


def no_dead_events(summary: SweepSummary, dead: Mapping[Provider, int]) -> dg.AssetCheckResult:
    """`dead` events spent their retry budget: no sweep touches them again until a replay."""
    return _count_check(
        "no_dead_events",
        "dead",
        {p.value: dead.get(p, 0) for p in summary.providers},
        dg.AssetCheckSeverity.WARN,
        "dead event(s): each one's cause and last_error are in the summary's `sweep` report and "
        "`dead_events` (the first 20); once the cause is fixed, launch the job "
        "`replay_webhook_events` (`provider`, `status: dead`, `since`, or `event_ids`) or run "
        "`payments-pipeline replay EVENT_ID ...`; if they need no processing, settle them with the "
        "job `dismiss_webhook_events`",
        "no dead events",
    )


def every_claim_dispatched(summary: SweepSummary) -> dg.AssetCheckResult:
    """A claimed event the dispatcher refused waits `minutes` before a sweep finds it again."""
    failed = [e.event.id for e in summary.events if e.outcome is SweepOutcome.DISPATCH_FAILED]
    shown = ", ".join(map(str, failed[:_SHOWN_IDS])) + (" ..." if len(failed) > _SHOWN_IDS else "")
    return dg.AssetCheckResult(
        check_name="every_claim_dispatched",
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(failed)} claimed event(s) could not be dispatched (ids {shown}); they come "
            "back as dispatch_lost after `minutes`"
            if failed
            else "every claimed event was dispatched"
        ),
        metadata={"dispatch_failed": unplotted(len(failed))},
    )


def evaluate(summary: SweepSummary, dead: Mapping[Provider, int]) -> list[dg.AssetCheckResult]:
    """Every check of `CHECK_SPECS`, in order."""
    return [
        no_expired_stuck_events(summary),
        no_dead_events(summary, dead),
        every_claim_dispatched(summary),
    ]

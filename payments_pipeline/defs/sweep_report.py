"""The sweep at a glance: the one Markdown entry (`sweep`) on the summary's materialization.

What the sweep found (by reason), claimed, dispatched and through which engine, skipped and why,
what failed to dispatch, the expired events by id (oldest first, capped), the dead, and what to
do next. It opens with ATTENTION when any of these needs a person: the run's status says only
that the sweep itself ran (a failed check does not fail the run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from ..models import DispatchMode, ProcessOutcome, Provider, SweepReason
from ..status import DeadDetail
from ..sweep import EXPIRED_SHOWN, ClaimResult, DispatchResult, Scan, SweepSummary
from .metadata import SKIPPED_WHY
from .tables import cell

REPLAY_JOB = "replay_webhook_events"
DISMISS_JOB = "dismiss_webhook_events"


def _by_reason(counter: Counter[SweepReason]) -> str:
    return ", ".join(f"{counter[r]} {r.value}" for r in SweepReason if counter[r])


def _ids(ids: list[int], cap: int = 20) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:cap])
    return shown + (f" and {len(ids) - cap} more" if len(ids) > cap else "")


def sweep_found(scan: Scan, dispatch: DispatchResult, dead: Mapping[Provider, int]) -> str:
    """The run's `payments_pipeline/found` tag: `3 stuck, 2 dead, 1 expired` (and what could not
    be dispatched), zeros included so every sweep in the Runs list reads the same way."""
    found = (
        f"{len(scan.candidates)} stuck, {sum(dead.values())} dead, "
        f"{sum(scan.expired.values())} expired"
    )
    return found + (f", {len(dispatch.failed)} not dispatched" if dispatch.failed else "")


def sweep_markdown(
    scan: Scan,
    claim: ClaimResult,
    dispatch: DispatchResult,
    summary: SweepSummary,
    *,
    mode: DispatchMode,
    outcomes: Mapping[ProcessOutcome, int] | None,
    dead: Mapping[Provider, int],
    dead_events: Sequence[DeadDetail] = (),
) -> str:
    params = scan.params
    found = Counter(c.reason for c in scan.candidates)
    expired = sum(scan.expired.values())
    dead_total = sum(dead.values())
    failed_ids = sorted(c.event.id for c in dispatch.failed)
    seconds = (summary.finished_at - summary.started_at).total_seconds()

    lines: list[str] = []
    attention = [
        f"{expired} expired event(s)" if expired else "",
        f"{len(failed_ids)} claimed event(s) not dispatched" if failed_ids else "",
        f"{dead_total} dead event(s)" if dead_total else "",
    ]
    if any(attention):
        lines += [
            f"**ATTENTION**: {', '.join(a for a in attention if a)}: see what to do next.",
            "",
        ]
    lines.append(
        f"**Sweep #{summary.sweep_id}** (`{scan.trigger.value}`, minutes {params.minutes}, "
        f"provider {params.provider}), {seconds:.2f} s"
    )
    lines.append("")
    stuck = f"**Found {len(scan.candidates)} stuck**"
    lines.append(f"- {stuck}: {_by_reason(found)}" if scan.candidates else f"- {stuck}")
    handed = f"- **Claimed {len(claim.claimed)}**, **dispatched {len(dispatch.dispatched)}**"
    handed += f" via `{mode.value}`"
    if outcomes:
        done = ", ".join(f"{n} {o.value}" for o, n in outcomes.items() if n)
        handed += f" (processed in this run: {done})"
    lines.append(handed)
    if claim.skipped:
        lines.append(f"- **Skipped {len(claim.skipped)}**: {SKIPPED_WHY}")
    else:
        lines.append("- **Skipped 0**")
    if failed_ids:
        lines.append(f"- **Not dispatched {len(failed_ids)}**: {_ids(failed_ids)}")
    if expired:
        lines.append(
            f"- **Expired {expired}** (stuck, older than {params.max_age_days} days, never "
            f"requeued), oldest first"
            + (f" ({EXPIRED_SHOWN} shown)" if expired > len(scan.expired_events) else "")
            + ":"
        )
        lines += [
            "",
            "| id | provider | event | status | created (UTC) |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {e.event.id} | {e.event.provider.value} | `{e.event.provider_event_id}` | "
            f"{e.status.value} | {e.created_at:%Y-%m-%d %H:%M} |"
            for e in scan.expired_events
        ]
        lines.append("")
    dead_line = f"- **Dead {dead_total}**"
    if dead_total:
        per = ", ".join(f"{n} {p.value}" for p, n in dead.items() if n)
        dead_line += f" ({per}): no sweep touches them again; each one's recorded cause"
        if dead_total > len(dead_events):
            dead_line += f" (the first {len(dead_events)} by id)"
        dead_line += ":"
    lines.append(dead_line)
    if dead_events:
        lines += [
            "",
            "| id | provider | event | attempts | cause | last_error | died (UTC) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {d.state.event.id} | {d.state.event.provider.value} | "
            f"`{d.state.event.provider_event_id}` | {d.state.attempts_used} | {d.cause} | "
            f"{cell(d.state.last_error)} | {d.state.updated_at:%Y-%m-%d %H:%M} |"
            for d in dead_events
        ]
        lines.append("")

    lines += ["", "**What to do next**", ""]
    todo = []
    if expired:
        todo.append(
            "Expired: look at each event above (`payments-pipeline status` lists them too); no "
            f"sweep will requeue it. Once looked at, send it round again with `{REPLAY_JOB}` "
            f"(`event_ids: [...]`), or settle it with `{DISMISS_JOB}` (`event_ids`, `reason`)."
        )
    if failed_ids:
        todo.append(
            f"Not dispatched: check the `{mode.value}` engine (the dispatch step's stderr has "
            f"each error); the events come back as dispatch_lost after {params.minutes} minutes."
        )
    if dead_total:
        providers = [p.value for p, n in dead.items() if n]
        which = providers[0] if len(providers) == 1 else "all"
        todo.append(
            f"Dead: fix their cause (each one's `last_error`, above), then launch the job "
            f"`{REPLAY_JOB}` with `provider: {which}`, `status: dead`, `since: <date>` (or "
            f"`event_ids: [...]`), or run `payments-pipeline replay EVENT_ID ...`; or, when they "
            f"need no processing, settle them with the job `{DISMISS_JOB}` (`event_ids`, `reason`)."
        )
    if not todo:
        todo.append("Nothing: every stuck event found was handed on.")
    lines += [f"- {t}" for t in todo]
    return "\n".join(lines)

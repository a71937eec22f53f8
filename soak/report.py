"""The run's figures as one JSON-able dict, and the one-screen text rendering of it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .celery_runs import TaskRuns
from .celery_supervisor import CeleryKills
from .chaos import ChaosStats
from .load import LoadGenerator
from .logscan import LogScan
from .snapshot import Snapshot
from .supervisor import WorkerStats
from .sweeps import SweepResult
from .verify import Verdict


def sweep_figures(sweeps: Sequence[SweepResult], groups: Sequence[int]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for sweep in sweeps:
        for event in (sweep.summary or {}).get("events", []):
            outcomes[event["outcome"]] += 1
            if event["outcome"] == "dispatched":
                reasons[event["reason"]] += 1
    failed = [s for s in sweeps if not s.ok]
    final = [s for s in sweeps if s.phase == "final"]
    return {
        "run": len(sweeps),
        "succeeded": len(sweeps) - len(failed),
        "failed": len(failed),
        "failure_reasons": dict(Counter((s.error or "?")[:120] for s in failed).most_common(5)),
        "concurrent_groups": sum(1 for g in groups if g > 1),
        "sweeps_in_concurrent_groups": sum(g for g in groups if g > 1),
        "by_phase": dict(Counter(s.phase for s in sweeps)),
        "redispatches_by_reason": dict(sorted(reasons.items())),
        "redispatches": sum(reasons.values()),
        "skipped": outcomes["skipped"],
        # claimed, but the sweep's inline processing raised (a cut connection): the row is
        # recovered later like a lost dispatch
        "dispatch_failed": outcomes["dispatch_failed"],
        "mean_seconds": round(sum(s.seconds for s in sweeps) / len(sweeps), 1) if sweeps else 0,
        "final_ok": bool(final) and final[-1].ok,
        "final_dispatched": (final[-1].summary or {}).get("total", {}).get("dispatched")
        if final
        else None,
    }


def celery_figures(
    *,
    queue: str,
    kills: CeleryKills,
    pool_exits_logged: int,
    pool_starts_abandoned: int,
    runs: TaskRuns,
    messages_left: int | None,
) -> dict[str, Any]:
    """The celery engine's own figures: its kills, and its task runs as the workers logged them."""
    return {
        "queue": queue,
        "pool_process_kills": kills.pool_kills,
        "pool_process_kills_mid_handler": kills.pool_kills_mid_handler,
        "worker_kills": kills.worker_kills,
        "worker_kills_mid_handler": kills.worker_kills_mid_handler,
        # Celery's own "Process ... exited with" lines: one per pool process it saw die
        "pool_exits_logged": pool_exits_logged,
        # new pool processes Celery killed itself, not up within 4 s (no task run): machine load
        "pool_starts_abandoned_by_celery": pool_starts_abandoned,
        "task_runs": runs.total,
        "redelivered_runs": runs.redeliveries,
        "run_outcomes": dict(sorted(runs.outcome_totals().items())),
        "runs_unfinished": runs.unfinished,  # killed mid-task: a start line, no end line
        "messages_left_in_queue": messages_left,
    }


def build(
    *,
    head: dict[str, Any],
    load: LoadGenerator,
    chaos: ChaosStats,
    workers: WorkerStats,
    injected_failures: int,
    stale_attempts: int,
    sweeps: Sequence[SweepResult],
    sweep_groups: Sequence[int],
    snap: Snapshot,
    verdict: Verdict,
    logs: LogScan,
) -> dict[str, Any]:
    records = [r for r in load.records.values() if not r.event.forged]
    real_stories = [s for s in load.stories if s.events]
    accepted = sum(r.accepted for r in records)
    statuses = Counter(e.status for e in snap.events.values())
    attempts = [e.attempts for e in snap.events.values()]
    return {
        **head,
        "events": {
            "sent": len(records),
            "stripe": sum(r.event.provider.value == "stripe" for r in records),
            "monetbil": sum(r.event.provider.value == "monetbil" for r in records),
            "stories": len(real_stories),
            "accepted": accepted,
            "never_accepted": len(records) - accepted,
            "forged_sent": sum(r.event.forged for r in load.records.values()),
        },
        "deliveries": {
            "total": load.counts["deliveries"],
            "duplicates": sum(max(0, r.copies - 1) for r in records),
            "concurrent_copies": load.counts["concurrent_copies"],
            "late_copies": load.counts["late_copies"],
            "retries_after_503_or_error": load.counts["retries"],
            "query_string_variant": load.counts["query_string"],
            "answers": {
                k.split(" ", 1)[1]: v
                for k, v in sorted(load.counts.items())
                if k.startswith(("outcome ", "status "))
            },
        },
        "out_of_order_pairs": sum(s.out_of_order for s in real_stories),
        "chaos": {
            "worker_kills": chaos.kills,
            "kills_mid_handler": workers.kills_mid_handler,
            "freezes": workers.freezes,
            # attempts of woken workers that the fence turned away (from the workers' own counts)
            "stale_attempts_fenced": stale_attempts,
            "cut_rounds": chaos.cut_rounds,
            "cut_connections": chaos.cut_connections,
            "cut_errors": chaos.cut_errors,
            "broker_cuts": chaos.broker_cuts,
            "broker_cut_connections": chaos.broker_cut_connections,
            "broker_outages": chaos.broker_outages,
            "worker_starts": workers.started,
            "injected_handler_failures": injected_failures,
        },
        "sweeps": sweep_figures(sweeps, sweep_groups),
        "final_states": {"processed": 0, "dead": 0, **dict(sorted(statuses.items()))},
        "payments": dict(sorted(Counter(p.status for p in snap.payments.values()).items())),
        "attempts": {
            "total": sum(attempts),
            "max": max(attempts, default=0),
            "events_with_more_than_one": sum(a > 1 for a in attempts),
            "explained_by_ambiguous_deliveries": verdict.notes.get(
                "attempts_explained_by_ambiguous_deliveries", 0
            ),
        },
        "ledger_rows": len(snap.ledger),
        "payment_changes_logged": len(snap.payment_log),
        "logs": {"files": logs.files, "lines": logs.lines},
        "violations": verdict.violations,
        "violation_count": verdict.count,
    }


def _kv(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"


def render(r: dict[str, Any]) -> str:
    ev, de, ch, sw, at = r["events"], r["deliveries"], r["chaos"], r["sweeps"], r["attempts"]
    lines = [
        f"soak on {r['backend']} ({r['database']}), dispatch {r.get('dispatch', 'table')}, "
        f"seed {r['seed']}: "
        f"{r['duration_s']:.0f} s of load, {r['elapsed_s']:.0f} s in all "
        f"(settle {r['settle_s']:.0f} s)",
        f"events sent   {ev['sent']} (stripe {ev['stripe']}, monetbil {ev['monetbil']}) in "
        f"{ev['stories']} stories; accepted {ev['accepted']}, never accepted "
        f"{ev['never_accepted']}; forged {ev['forged_sent']} (all must be refused)",
        f"deliveries    {de['total']}: duplicates {de['duplicates']} (concurrent "
        f"{de['concurrent_copies']}, a minute late {de['late_copies']}), retries "
        f"{de['retries_after_503_or_error']}, "
        f"query-string {de['query_string_variant']}; out-of-order pairs {r['out_of_order_pairs']}",
        f"answers       {_kv(de['answers'])}",
        *(
            _celery_lines(r["celery"], ch)
            if "celery" in r
            else [
                f"chaos         {ch['worker_kills']} workers SIGKILLed ({ch['kills_mid_handler']} "
                f"holding an uncommitted effect), {ch['freezes']} frozen mid-handler past the "
                f"timeout ({ch['stale_attempts_fenced']} stale attempts fenced)",
            ]
        ),
        f"              {ch['cut_connections']} connections cut in {ch['cut_rounds']} rounds, "
        f"{ch['injected_handler_failures']} injected handler failures, "
        f"{ch['worker_starts']} worker starts"
        + (" (Celery main processes)" if "celery" in r else ""),
        f"sweeps        {sw['run']} run ({sw['succeeded']} ok, {sw['failed']} failed), "
        f"{sw['concurrent_groups']} concurrent groups ({sw['sweeps_in_concurrent_groups']} "
        f"sweeps), mean {sw['mean_seconds']} s",
        f"redispatches  {sw['redispatches']}: {_kv(sw['redispatches_by_reason'])}; "
        f"skipped {sw['skipped']}, dispatch_failed {sw['dispatch_failed']}",
        f"final sweep   {'ok' if sw['final_ok'] else 'FAILED'}, dispatched "
        f"{sw['final_dispatched']}",
        f"final states  {_kv(r['final_states'])}",
        f"payments      {_kv(r['payments'])}",
        f"attempts      {at['total']} (max {at['max']}, {at['events_with_more_than_one']} events "
        f"retried, {at['explained_by_ambiguous_deliveries']} covered only by an ambiguous "
        f"delivery)",
        f"effects       ledger rows {r['ledger_rows']}, payment changes committed "
        f"{r['payment_changes_logged']}",
        f"logs          {r['logs']['lines']} lines in {r['logs']['files']} files scanned",
    ]
    if r["violation_count"]:
        lines.append(f"VIOLATIONS    {r['violation_count']}")
        for check, problems in r["violations"].items():
            lines.append(f"  {check}: {len(problems)}")
            lines += [f"    - {p}" for p in problems[:5]]
            if len(problems) > 5:
                lines.append(f"    ... and {len(problems) - 5} more")
    else:
        lines.append("violations    none")
    if "log_dir" in r:
        lines.append(f"logs kept in  {r['log_dir']}")
    return "\n".join(lines)


def _celery_lines(c: dict[str, Any], ch: dict[str, Any]) -> list[str]:
    return [
        f"chaos         {ch['worker_kills']} SIGKILLs: {c['pool_process_kills']} pool processes "
        f"({c['pool_process_kills_mid_handler']} holding an uncommitted effect), "
        f"{c['worker_kills']} whole workers ({c['worker_kills_mid_handler']} with a pool process "
        f"holding one); no freezes (celery); {c['pool_exits_logged']} pool exits logged by Celery "
        f"({c['pool_starts_abandoned_by_celery']} slow starts it gave up on)",
        f"broker        {ch['broker_cut_connections']} connections cut in {ch['broker_cuts']} "
        f"rounds, {ch['broker_outages']} outages (through the soak's TCP proxy)",
        f"task runs     {c['task_runs']} on queue {c['queue']}: redelivered "
        f"{c['redelivered_runs']}, killed mid-task {c['runs_unfinished']}; outcomes "
        f"{_kv(c['run_outcomes'])}; {ch['stale_attempts_fenced']} stale; messages left "
        f"{c['messages_left_in_queue']}",
    ]

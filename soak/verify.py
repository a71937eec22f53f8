"""The invariants, checked on the database after the run against what the soak itself recorded.

Each check returns its violations as one-line strings; `verify` groups them by check. What each
proves, and why, is in docs/RELIABILITY.md ("The invariants").
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from payments_pipeline import payment_state
from payments_pipeline.models import PaymentStatus, PaymentUpdate

from .celery_runs import ATTEMPT_OUTCOMES, TaskRuns
from .load import EventRecord
from .snapshot import LedgerRow, LogRow, Snapshot
from .stories import Story
from .sweeps import SweepResult

FINAL = ("processed", "dead")
SWEEP_CLAIMS = ("dispatched", "dispatch_failed")  # outcomes of a claim that stamped dispatched_at


@dataclass
class Verdict:
    violations: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def add(self, check: str, problems: Iterable[str]) -> None:
        problems = list(problems)
        if problems:
            self.violations.setdefault(check, []).extend(problems)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.violations.values())


def verify(
    snap: Snapshot,
    records: dict[tuple[str, str], EventRecord],
    stories: Sequence[Story],
    sweeps: Sequence[SweepResult],
    task_runs: TaskRuns | None = None,
) -> Verdict:
    """Every check; `task_runs` (the celery engine's, `celery_runs.read`) adds `task_runs`."""
    verdict = Verdict()
    verdict.add("settled", check_settled(snap, records))
    verdict.add("payment_state", check_payment_state(snap, stories))
    verdict.add("effects_once", check_effects(snap))
    problems, explained = check_attempts(snap, records)
    verdict.add("attempt_without_dispatch", problems)
    verdict.notes["attempts_explained_by_ambiguous_deliveries"] = explained
    verdict.add("sweep_audit", check_sweep_audit(snap, sweeps))
    if task_runs is not None:
        verdict.add("task_runs", check_task_runs(snap, task_runs))
    return verdict


def check_settled(snap: Snapshot, records: dict[tuple[str, str], EventRecord]) -> list[str]:
    """Every accepted event is processed or dead; no row for a delivery never accepted."""
    out = []
    for key, record in records.items():
        row = snap.events.get(key)
        if record.accepted and not record.event.forged:
            if row is None:
                out.append(f"accepted event {key} has no row (lost)")
            elif row.status not in FINAL:
                out.append(f"accepted event {key} (#{row.id}) is stuck in {row.status}")
        elif row is not None:
            out.append(f"never-accepted delivery {key} has a row (#{row.id}, {row.status})")
    for key, row in snap.events.items():
        if key not in records:
            out.append(f"row #{row.id} {key} matches no delivery the soak made")
    return out


def _replay(updates: Sequence[PaymentUpdate]) -> PaymentStatus | None:
    result = payment_state.replay(updates)
    return next(iter(result.values())) if result else None


def check_payment_state(snap: Snapshot, stories: Sequence[Story]) -> list[str]:
    """Each payment's status is the replay of its processed events; every order gives the same."""
    out = []
    for story in stories:
        updates = [e.update for e in story.events if e.update is not None]
        outcomes = {_replay(list(order)) for order in itertools.permutations(updates)}
        if len(outcomes) != 1:
            out.append(f"story {story.number} ({story.kind}) is not order-independent: {outcomes}")
        applied = [
            e.update
            for e in story.events
            if e.update is not None
            and (row := snap.events.get(e.key)) is not None
            and row.status == "processed"
        ]
        key = (story.provider.value, story.reference)
        expected = _replay(applied)
        payment = snap.payments.get(key)
        if expected is None:
            if payment is not None:
                out.append(f"payment {key} exists but none of its events was processed")
            continue
        if payment is None:
            out.append(f"payment {key} is missing; replay says {expected.value}")
        elif payment.status != expected.value:
            out.append(f"payment {key} is {payment.status}; replay says {expected.value}")
        elif payment.amount != story.amount:
            out.append(f"payment {key} amount {payment.amount}; its events say {story.amount}")
    story_keys = {(s.provider.value, s.reference) for s in stories}
    out += [f"payment {key} belongs to no story" for key in snap.payments if key not in story_keys]
    return out


def check_effects(snap: Snapshot) -> list[str]:
    """No effect twice: one ledger row and one committed payment change (trigger) per event at
    most, the two in one-to-one agreement, only for processed events, from the attempt that
    processed them; each payment's changes form an allowed chain ending in its status."""
    out = []
    events = snap.events_by_id
    ledger_by_event: dict[int, list[LedgerRow]] = defaultdict(list)
    for row in snap.ledger:
        ledger_by_event[row.event_id].append(row)
    log_by_event: dict[int | None, list[LogRow]] = defaultdict(list)
    for change in snap.payment_log:
        log_by_event[change.event_id].append(change)
    for event_id, rows in ledger_by_event.items():
        event = events.get(event_id)
        if len(rows) > 1:
            out.append(f"event #{event_id} has {len(rows)} ledger rows")
        if event is None or event.status != "processed":
            out.append(f"ledger row for event #{event_id}, which is not processed")
        elif rows[0].attempt != event.attempts:
            out.append(
                f"event #{event_id}: effect from attempt {rows[0].attempt}, "
                f"but processed by attempt {event.attempts}"
            )
    for changed_by, changes in log_by_event.items():
        if len(changes) > 1:
            out.append(f"event #{changed_by} changed payments {len(changes)} times")
        ledger = ledger_by_event.get(changed_by or -1, [])
        for change in changes:
            if not any(
                (r.from_status, r.to_status) == (change.old_status, change.new_status)
                for r in ledger
            ):
                out.append(
                    f"payment change by event #{changed_by} ({change.old_status} -> "
                    f"{change.new_status}) has no matching ledger row"
                )
    for event_id in ledger_by_event:
        if event_id not in log_by_event:
            out.append(f"ledger row of event #{event_id} matches no committed payment change")
    out += _check_chains(snap)
    return out


def _allowed(old: str | None, new: str) -> bool:
    if old is None:
        return True
    before, after = PaymentStatus(old), PaymentStatus(new)
    if after == before:
        return before in payment_state.REFRESHABLE
    return after in payment_state.ALLOWED[before]


def _check_chains(snap: Snapshot) -> list[str]:
    out = []
    chains: dict[int, list[LogRow]] = defaultdict(list)
    for change in snap.payment_log:  # in id order: commit order for one payment (its row lock)
        chains[change.payment_id].append(change)
    payments = {p.id: p for p in snap.payments.values()}
    for payment_id, chain in chains.items():
        payment = payments.get(payment_id)
        if payment is None:
            out.append(f"payment #{payment_id} changed but no longer exists")
            continue
        if chain[0].old_status is not None:
            out.append(f"payment #{payment_id}: first change does not create it")
        for before, after in itertools.pairwise(chain):
            if after.old_status != before.new_status:
                out.append(f"payment #{payment_id}: change #{after.id} skips a state")
        for change in chain:
            if not _allowed(change.old_status, change.new_status):
                out.append(
                    f"payment #{payment_id}: {change.old_status} -> {change.new_status} "
                    "is not an allowed transition"
                )
        last = chain[-1]
        if (last.new_status, last.event_id) != (payment.status, payment.last_event_id):
            out.append(f"payment #{payment_id}: its last committed change is not its state")
    return out


def check_attempts(
    snap: Snapshot, records: dict[tuple[str, str], EventRecord]
) -> tuple[list[str], int]:
    """Every processing attempt consumed a recorded dispatch: attempts <= the gate's dispatched and
    redispatched answers + the sweeps' claims of the event. A delivery that failed (503, lost
    connection) may have committed its claim unseen; such events are counted, not failed."""
    claims: Counter[int] = Counter(
        r.event_id for r in snap.sweep_events if r.outcome in SWEEP_CLAIMS
    )
    out, explained = [], 0
    for key, row in snap.events.items():
        record = records.get(key)
        seen = (record.dispatches if record else 0) + claims[row.id]
        if row.attempts <= seen:
            continue
        if record is not None and row.attempts <= seen + record.ambiguous:
            explained += 1
            continue
        out.append(f"event #{row.id} {key}: {row.attempts} attempts, {seen} recorded dispatches")
    return out, explained


def check_sweep_audit(snap: Snapshot, sweeps: Sequence[SweepResult]) -> list[str]:
    """Every event a sweep's JSON reports is in `sweep_events`, same reason and outcome, and the
    sweep's `sweep_runs` row says it succeeded."""
    audit = {(r.sweep_id, r.event_id): r for r in snap.sweep_events}
    out = []
    for sweep in sweeps:
        if sweep.summary is None:
            continue
        sweep_id = sweep.summary["sweep_id"]
        if snap.sweep_runs.get(sweep_id) != "succeeded":
            out.append(f"sweep #{sweep_id} printed a summary but its run row is not succeeded")
        for event in sweep.summary["events"]:
            row = audit.get((sweep_id, event["id"]))
            if row is None:
                out.append(f"sweep #{sweep_id} reported event #{event['id']}: no sweep_events row")
            elif (row.reason, row.outcome) != (event["reason"], event["outcome"]):
                out.append(
                    f"sweep #{sweep_id} event #{event['id']}: JSON says {event['reason']}/"
                    f"{event['outcome']}, sweep_events says {row.reason}/{row.outcome}"
                )
    return out


def check_task_runs(snap: Snapshot, runs: TaskRuns) -> list[str]:
    """The celery engine: only task runs start attempts (the receiver and the sweeps publish), so
    for every event attempts <= its task runs minus those that ended `not_claimed` (a redelivered
    or duplicate message consumes nothing), and >= the runs that reported an attempt's outcome;
    no event reported processed twice, or processed when its row is not; no run of an unknown
    event. `check_attempts` still pairs each attempt with a claim: this pairs it with a run."""
    out = []
    events = snap.events_by_id
    for event_id in sorted(set(runs.starts) | set(runs.outcomes)):
        if event_id not in events:
            out.append(f"task runs for event #{event_id}, which has no row")
    for row in snap.events.values():
        started = runs.starts[row.id]
        outcomes = runs.outcomes.get(row.id, Counter())
        ended = sum(outcomes.values())
        if ended > started:
            out.append(f"event #{row.id}: {ended} task runs ended, {started} started")
        not_claimed = outcomes["not_claimed"]
        if row.attempts > started - not_claimed:
            out.append(
                f"event #{row.id}: {row.attempts} attempts, {started} task runs of which "
                f"{not_claimed} not_claimed"
            )
        reported = sum(outcomes[o] for o in ATTEMPT_OUTCOMES)
        if reported > row.attempts:
            out.append(
                f"event #{row.id}: {reported} task runs report an attempt, {row.attempts} attempts"
            )
        processed = outcomes["processed"]
        if processed > 1 or (processed and row.status != "processed"):
            out.append(f"event #{row.id} ({row.status}): {processed} task runs report processed")
    return out

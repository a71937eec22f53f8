"""The requeue sweep (seed: `payments:requeue-stuck-webhooks`), in four phases.

`begin_sweep` opens the audit row and scans the candidates of every reason; `claim_candidates`
claims them set-based, in batches, with UPDATEs that repeat each reason's condition (so two sweeps
at once dispatch every event once) and writes the per-event audit in the same transactions;
`dispatch_claimed` hands the winners to a `Dispatcher`; `finish_sweep` closes the audit and returns
the summary. `run_sweep` chains them; the Dagster assets call one phase each.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine

from . import store
from .config import DEFAULTS, Settings
from .dispatch import Dispatcher, unsent_errors
from .errors import short_error
from .models import (
    PROVIDERS,
    EventRef,
    Provider,
    SweepOutcome,
    SweepReason,
    SweepStatus,
    SweepTrigger,
    utcnow,
)

log = logging.getLogger(__name__)

ALL = "all"
PROVIDER_CHOICES = (ALL, *(p.value for p in PROVIDERS))
DEFAULT_BATCH_SIZE = 2000


class SweepParamError(ValueError):
    """A sweep parameter is out of range; raised before anything is read or written."""


@dataclass(frozen=True)
class SweepParams:
    minutes: int = DEFAULTS.stuck_requeue_minutes
    provider: str = ALL
    max_age_days: int = DEFAULTS.max_age_days
    processing_timeout_minutes: int = DEFAULTS.processing_timeout_minutes
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, int) or self.minutes < 1:
            raise SweepParamError(f"minutes must be a whole number >= 1, got {self.minutes!r}")
        if self.provider not in PROVIDER_CHOICES:
            raise SweepParamError(
                f"unknown provider {self.provider!r}: choose one of {', '.join(PROVIDER_CHOICES)}"
            )
        for name in ("max_age_days", "processing_timeout_minutes", "batch_size"):
            if getattr(self, name) < 1:
                raise SweepParamError(f"{name} must be >= 1")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, minutes: int | None = None, provider: str = ALL
    ) -> SweepParams:
        return cls(
            minutes=settings.stuck_requeue_minutes if minutes is None else minutes,
            provider=provider,
            max_age_days=settings.max_age_days,
            processing_timeout_minutes=settings.processing_timeout_minutes,
        )

    @property
    def providers(self) -> tuple[Provider, ...]:
        return PROVIDERS if self.provider == ALL else (Provider(self.provider),)

    def cutoffs(self, now: dt.datetime) -> store.Cutoffs:
        """What is stuck at `now` by these thresholds, and where the window starts: a stuck row
        created before it is expired (a sweep only counts it; a person may replay or dismiss it
        by id)."""
        return store.Cutoffs.at(
            now,
            stuck=dt.timedelta(minutes=self.minutes),
            stalled=dt.timedelta(minutes=self.processing_timeout_minutes),
            max_age=dt.timedelta(days=self.max_age_days),
        )


class Candidate(NamedTuple):
    """An event and the reason it is stuck (a NamedTuple: a sweep builds 100,000s of them)."""

    event: EventRef
    reason: SweepReason


EXPIRED_SHOWN = 20  # the oldest expired events a scan lists; `expired` counts them all


@dataclass(frozen=True)
class Scan:
    """What the sweep found: candidates inside the window, and stuck rows too old to touch."""

    sweep_id: int | None  # None for a dry run: nothing is written
    params: SweepParams
    trigger: SweepTrigger
    started_at: dt.datetime
    candidates: tuple[Candidate, ...]
    expired: dict[Provider, int]
    dry_run: bool = False
    expired_events: tuple[store.ExpiredEvent, ...] = ()  # the oldest EXPIRED_SHOWN, oldest first

    @property
    def cutoffs(self) -> store.Cutoffs:
        """What the scan and every claim of this sweep call stuck, and its window."""
        return self.params.cutoffs(self.started_at)

    @property
    def stuck_before(self) -> dt.datetime:
        return self.cutoffs.stuck_before

    @property
    def created_after(self) -> dt.datetime:
        return self.cutoffs.window_start


@dataclass(frozen=True)
class ClaimResult:
    claimed: tuple[Candidate, ...]
    skipped: tuple[Candidate, ...]


@dataclass(frozen=True)
class DispatchResult:
    dispatched: tuple[Candidate, ...]
    failed: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class Counts:
    scanned: int = 0
    dispatched: int = 0
    skipped: int = 0
    expired: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.scanned + other.scanned,
            self.dispatched + other.dispatched,
            self.skipped + other.skipped,
            self.expired + other.expired,
        )

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class EventOutcome(NamedTuple):
    event: EventRef
    reason: SweepReason
    outcome: SweepOutcome

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event.id,
            "provider": self.event.provider.value,
            "provider_event_id": self.event.provider_event_id,
            "event_type": self.event.event_type,
            "reason": self.reason.value,
            "outcome": self.outcome.value,
        }


@dataclass(frozen=True)
class SweepSummary:
    sweep_id: int | None
    minutes: int
    provider: str
    trigger: SweepTrigger
    started_at: dt.datetime
    finished_at: dt.datetime
    providers: dict[Provider, Counts]
    events: tuple[EventOutcome, ...]
    dry_run: bool = False
    reasons: dict[SweepReason, int] = field(default_factory=dict)  # dispatched, per reason

    @property
    def total(self) -> Counts:
        return sum(self.providers.values(), Counts())

    def as_json(self) -> dict[str, Any]:
        """The object `requeue-stuck-webhooks --json` prints (docs/reference.md, "Sweep JSON")."""
        out: dict[str, Any] = {
            "sweep_id": self.sweep_id,
            "minutes": self.minutes,
            "provider": self.provider,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "providers": {p.value: c.as_dict() for p, c in self.providers.items()},
            "total": self.total.as_dict(),
            "events": [e.as_dict() for e in self.events],
        }
        if self.dry_run:
            out["dry_run"] = True
        return out

    def render_text(self) -> str:
        """The seed's human summary: per provider scanned / dispatched / skipped, then a total."""
        head = "Sweep (dry run: nothing claimed)" if self.dry_run else f"Sweep #{self.sweep_id}"
        lines = [f"{head}: minutes={self.minutes} provider={self.provider}", "=== Summary ==="]
        for provider, c in self.providers.items():
            lines += [
                f"{provider.value}:",
                f"  Scanned: {c.scanned}",
                f"  {'Would dispatch' if self.dry_run else 'Dispatched'}: "
                f"{c.scanned if self.dry_run else c.dispatched}",
                f"  Skipped: {c.skipped}",
            ]
            if c.expired:
                lines.append(f"  Expired (older than the window, not touched): {c.expired}")
        t = self.total
        lines.append("")
        lines.append(
            f"Total: {t.scanned} scanned, {t.dispatched} dispatched, {t.skipped} skipped"
            + (f", {t.expired} expired" if t.expired else "")
        )
        return "\n".join(lines)


def _iso(value: dt.datetime) -> str:
    return value.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


# --- the phases ----------------------------------------------------------------------------------


def begin_sweep(
    engine: Engine,
    params: SweepParams,
    *,
    trigger: SweepTrigger = SweepTrigger.CLI,
    dagster_run_id: str | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> Scan:
    """Open the audit row (unless dry run) and scan every reason's candidates."""
    started_at = now or utcnow()
    sweep_id = None
    if not dry_run:
        sweep_id = store.in_transaction(
            engine,
            lambda conn: store.insert_sweep_run(
                conn,
                started_at=started_at,
                trigger=trigger.value,
                dagster_run_id=dagster_run_id,
                minutes=params.minutes,
                provider=params.provider,
            ),
        )
    shell = Scan(sweep_id, params, trigger, started_at, (), {}, dry_run)
    try:
        with engine.connect() as conn:
            candidates = _scan(conn, shell)
            at = shell.cutoffs
            expired = store.count_expired(conn, at=at, providers=params.providers)
            oldest = []
            if expired:
                oldest = store.list_expired(
                    conn, at=at, providers=params.providers, limit=EXPIRED_SHOWN
                )
    except Exception as exc:
        fail_sweep(engine, shell, exc)
        raise
    for provider, n in expired.items():
        log.warning(
            "%s stuck %s event(s) are older than %s days: not requeued, counted as expired",
            n,
            provider.value,
            params.max_age_days,
        )
    return Scan(sweep_id, params, trigger, started_at, candidates, expired, dry_run, tuple(oldest))


def _scan(conn: Connection, scan: Scan) -> tuple[Candidate, ...]:
    # The four conditions are disjoint by status (and by dispatched_at for the two `received`
    # ones), so an event is a candidate for one reason at most.
    at = scan.cutoffs
    found = [
        Candidate(ref, reason)
        for reason in SweepReason
        for ref in store.select_stuck(conn, reason=reason, at=at, providers=scan.params.providers)
    ]
    found.sort(key=lambda c: c.event.id)
    return tuple(found)


def _batches(items: Sequence[Candidate], size: int) -> Iterator[Sequence[Candidate]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def claim_candidates(engine: Engine, scan: Scan) -> ClaimResult:
    """Claim every candidate, one transaction per batch and reason, audit rows included."""
    if scan.dry_run or scan.sweep_id is None:
        return ClaimResult(claimed=(), skipped=())
    sweep_id = scan.sweep_id
    claimed: list[Candidate] = []
    skipped: list[Candidate] = []
    by_reason: dict[SweepReason, list[Candidate]] = {}
    for c in scan.candidates:
        by_reason.setdefault(c.reason, []).append(c)
    at = scan.cutoffs
    try:
        for reason, candidates in by_reason.items():
            for batch in _batches(candidates, scan.params.batch_size):

                def work(
                    conn: Connection,
                    batch: Sequence[Candidate] = batch,
                    reason: SweepReason = reason,
                ) -> set[int]:
                    won = set(
                        store.claim_stuck(
                            conn,
                            reason=reason,
                            event_ids=[c.event.id for c in batch],
                            at=at,
                            now=utcnow(),
                        )
                    )
                    store.insert_sweep_events(
                        conn,
                        sweep_id=sweep_id,
                        rows=[
                            (
                                c.event.id,
                                reason,
                                SweepOutcome.DISPATCHED
                                if c.event.id in won
                                else SweepOutcome.SKIPPED,
                            )
                            for c in batch
                        ],
                    )
                    return won

                won = store.in_transaction(engine, work)
                for c in batch:
                    (claimed if c.event.id in won else skipped).append(c)
    except Exception as exc:
        fail_sweep(engine, scan, exc)
        raise
    claimed.sort(key=lambda c: c.event.id)
    skipped.sort(key=lambda c: c.event.id)
    return ClaimResult(tuple(claimed), tuple(skipped))


def dispatch_claimed(
    engine: Engine, scan: Scan, claim: ClaimResult, dispatcher: Dispatcher
) -> DispatchResult:
    """Hand the claimed events on together (`dispatch_many`: the celery engine publishes a few
    hundred ids a message), logging the seed's line for each; an event the dispatcher could not
    hand on is recorded (outcome `dispatch_failed`) and the row is recovered later as
    `dispatch_lost`."""
    unsent = unsent_errors(dispatcher, [c.event for c in claim.claimed])
    for c in claim.claimed:
        _log_hand_off(c, unsent.get(c.event.id))
    dispatched = [c for c in claim.claimed if c.event.id not in unsent]
    failed = [c for c in claim.claimed if c.event.id in unsent]
    if failed and scan.sweep_id is not None:
        sweep_id = scan.sweep_id
        store.in_transaction(
            engine,
            lambda conn: store.set_sweep_event_outcome(
                conn,
                sweep_id=sweep_id,
                event_ids=[c.event.id for c in failed],
                outcome=SweepOutcome.DISPATCH_FAILED,
            ),
        )
    return DispatchResult(tuple(dispatched), tuple(failed))


def _log_hand_off(c: Candidate, error: Exception | None) -> None:
    """The seed's line for a requeued event, or why the dispatcher could not hand it on."""
    ref = c.event
    if error is None:
        log.info(
            "webhook event requeued provider=%s provider_event_id=%s event_type=%s reason=%s",
            ref.provider.value,
            ref.provider_event_id,
            ref.event_type,
            c.reason.value,
        )
    else:
        log.error(
            "webhook event dispatch failed provider=%s provider_event_id=%s reason=%s: %s",
            ref.provider.value,
            ref.provider_event_id,
            c.reason.value,
            short_error(error),
        )


def close_sweep_run(
    engine: Engine,
    sweep_id: int,
    *,
    status: SweepStatus,
    counts: Counts = Counts(),
    error: str | None = None,
    finished_at: dt.datetime | None = None,
) -> None:
    """Close the `sweep_runs` row `sweep_id` in its own transaction (finished now by default)."""
    store.in_transaction(
        engine,
        lambda conn: store.finish_sweep_run(
            conn,
            sweep_id=sweep_id,
            finished_at=finished_at or utcnow(),
            status=status,
            error=error,
            **counts.as_dict(),
        ),
    )


def finish_sweep(
    engine: Engine,
    scan: Scan,
    claim: ClaimResult,
    dispatch: DispatchResult,
    *,
    now: dt.datetime | None = None,
) -> SweepSummary:
    """Close the audit row and build the summary every door prints."""
    finished_at = now or utcnow()
    outcomes: dict[int, SweepOutcome] = {}
    if scan.dry_run:
        outcomes = {c.event.id: SweepOutcome.WOULD_DISPATCH for c in scan.candidates}
    else:
        outcomes |= {c.event.id: SweepOutcome.SKIPPED for c in claim.skipped}
        outcomes |= {c.event.id: SweepOutcome.DISPATCHED for c in dispatch.dispatched}
        outcomes |= {c.event.id: SweepOutcome.DISPATCH_FAILED for c in dispatch.failed}
    events = tuple(
        EventOutcome(c.event, c.reason, outcomes[c.event.id])
        for c in scan.candidates
        if c.event.id in outcomes
    )
    providers: dict[Provider, Counts] = {}
    for p in scan.params.providers:
        mine = [e for e in events if e.event.provider is p]
        providers[p] = Counts(
            scanned=len(mine),
            dispatched=sum(e.outcome is SweepOutcome.DISPATCHED for e in mine),
            skipped=sum(e.outcome is SweepOutcome.SKIPPED for e in mine),
            expired=scan.expired.get(p, 0),
        )
    summary = SweepSummary(
        sweep_id=scan.sweep_id,
        minutes=scan.params.minutes,
        provider=scan.params.provider,
        trigger=scan.trigger,
        started_at=scan.started_at,
        finished_at=finished_at,
        providers=providers,
        events=events,
        dry_run=scan.dry_run,
        reasons=dict(Counter(c.reason for c in dispatch.dispatched)),
    )
    if scan.sweep_id is not None:
        close_sweep_run(
            engine,
            scan.sweep_id,
            status=SweepStatus.SUCCEEDED,
            counts=summary.total,
            finished_at=finished_at,
        )
    return summary


def fail_sweep(engine: Engine, scan: Scan, exc: BaseException) -> None:
    """Mark the audit row failed (best effort: the database may be what failed)."""
    if scan.sweep_id is None:
        return
    try:
        close_sweep_run(engine, scan.sweep_id, status=SweepStatus.FAILED, error=short_error(exc))
    except Exception:
        log.exception("could not mark sweep %s failed", scan.sweep_id)


def run_sweep(
    engine: Engine,
    params: SweepParams,
    dispatcher: Dispatcher,
    *,
    trigger: SweepTrigger = SweepTrigger.CLI,
    dagster_run_id: str | None = None,
    dry_run: bool = False,
) -> SweepSummary:
    """One whole sweep: scan, claim, dispatch, audit."""
    scan = begin_sweep(
        engine, params, trigger=trigger, dagster_run_id=dagster_run_id, dry_run=dry_run
    )
    claim = claim_candidates(engine, scan)
    try:
        dispatch = dispatch_claimed(engine, scan, claim, dispatcher)
    except Exception as exc:
        fail_sweep(engine, scan, exc)
        raise
    return finish_sweep(engine, scan, claim, dispatch)

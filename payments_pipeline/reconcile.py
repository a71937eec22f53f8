"""Recovery: what never reached the door. List what the provider has, take in what we lack.

A sweep finds only rows that were written. An event whose deliveries all failed (the endpoint was
down longer than Stripe's 3 days of retries, answered 400 after a secret rotation, was disabled)
was never written, so no sweep can see it. A reconciliation asks the provider itself:

- **Stripe** (`reconcile_stripe`): list `GET /v1/events` created in a window
  (`providers.stripe_api`) and put every listed event of the types we apply through the same
  gate as a delivery (`gate.receive`: insert-or-ignore on the provider key, the claims, the
  dispatcher). Which ids of a page we already hold is one query per page; only the others go
  through the gate, so a second run over the same window writes nothing. A late delivery racing
  the reconciliation meets it at the unique key: one of the two inserts, the other is a duplicate
  (`known`). Nothing depends on the order of the listing nor on whether Stripe thinks a delivery
  succeeded.
- **Monetbil** has no list API (`reconcile_monetbil`): checkPayment is asked about each given
  transaction; a final status becomes the notification it stands for (`<transaction_id>:<status>`)
  through the gate.

New rows carry `received_via = 'api'`. Each run (not a dry run) is audited: one `sweep_runs` row
(`kind = 'reconcile'`, the listed window) and one `sweep_events` row per recovered event (reason
`missed_delivery`, the hand-off's outcome). The provider is asked before anything is written: a
refused key, an unreachable API or a bad window writes nothing.

The default Stripe window ends now and starts where the reconciled history stops, minus
`OVERLAP`: the end of the stretch of time successful reconciliations have covered without a gap
(so a narrow window run by hand never makes the next run skip what lay before it), 72 hours back
the first time, never further back than the 30 days Stripe keeps events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine

from . import gate, store
from .config import Settings
from .dispatch import Dispatcher, unsent_errors
from .handlers import default_registry
from .models import (
    MISSED_DELIVERY,
    EventRef,
    Provider,
    ReceivedVia,
    SweepKind,
    SweepOutcome,
    SweepStatus,
    SweepTrigger,
    utcnow,
)
from .providers import monetbil
from .providers import stripe as stripe_events
from .providers.errors import PayloadError, check_identifier
from .providers.monetbil_check import CheckPaymentUnreachable, ConfirmationUnavailable, PaymentCheck
from .providers.stripe_api import StripeApi, StripeApiError, StripeEvents
from .sweep import Counts, close_sweep_run

log = logging.getLogger(__name__)

OVERLAP = dt.timedelta(minutes=10)
FIRST_LOOKBACK = dt.timedelta(hours=72)
# Stripe keeps events 30 days: a wider window could only pretend to look further back.
MAX_WINDOW = dt.timedelta(days=30)
_EPOCH = dt.datetime(1970, 1, 1)


class ReconcileError(ValueError):
    """Bad input (a window, a type, a transaction id): refused before anything is asked or
    written; the message says what to fix."""


class ProviderUnavailable(Exception):
    """The provider's API could not be asked or refused us; nothing was written. The message
    never contains a key."""


def stripe_key(settings: Settings) -> str:
    """STRIPE_API_KEY, or `ReconcileError` saying what key to create (every Stripe door)."""
    if not settings.stripe_api_key:
        raise ReconcileError(
            "STRIPE_API_KEY is not set: create a restricted key with read access to Events, "
            "PaymentIntents and Charges (docs/reconcile.md)"
        )
    return settings.stripe_api_key


# --- the window ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Events `created` in `[since, until]` (naive UTC)."""

    since: dt.datetime
    until: dt.datetime

    @property
    def created_gte(self) -> int:
        return int((self.since - _EPOCH).total_seconds())

    @property
    def created_lte(self) -> int:
        return int((self.until - _EPOCH).total_seconds())

    def holds(self, created: int) -> bool:
        return self.created_gte <= created <= self.created_lte


def utc(value: dt.datetime) -> dt.datetime:
    """A datetime as naive UTC (an aware one converted; a naive one taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def parse_time(text: str, name: str) -> dt.datetime:
    """An ISO date or date-time (`2026-12-07`, `2026-12-07T10:00`, `...Z`, `...+01:00`) as
    naive UTC; `ReconcileError` naming `name` otherwise."""
    raw = text.strip()
    try:
        return utc(dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        raise ReconcileError(
            f"{name} must be an ISO date or time such as 2026-12-07 or 2026-12-07T10:00:00Z, "
            f"got {raw!r}"
        ) from None


def default_since(engine: Engine, *, provider: Provider, now: dt.datetime) -> dt.datetime:
    """Where the next reconciliation of `provider` starts by default (module docstring)."""
    floor = now - MAX_WINDOW
    with engine.connect() as conn:
        first = store.first_reconciled_start(conn, provider=provider)
        if first is None:
            return max(floor, now - FIRST_LOOKBACK)
        windows = store.reconciled_windows(conn, provider=provider, ending_after=floor)
    covered = covered_until(windows, start=max(first, floor))
    return max(floor, covered - OVERLAP) if covered is not None else floor


def covered_until(
    windows: Iterable[tuple[dt.datetime, dt.datetime]], *, start: dt.datetime
) -> dt.datetime | None:
    """The end of the stretch from `start` that `windows` (sorted by start) cover without a gap;
    None when none of them reaches `start`."""
    covered: dt.datetime | None = None
    for begin, end in windows:
        reach = start if covered is None else covered
        if begin > reach:
            break
        if end >= reach:
            covered = end if covered is None else max(covered, end)
    return covered


def stripe_window(
    engine: Engine,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    hours: int | None = None,
    now: dt.datetime | None = None,
) -> Window:
    """The window a Stripe reconciliation lists: `since`/`until` as given (naive UTC or aware),
    or `hours` back from `until`, or the default (module docstring). Refuses, with
    `ReconcileError`, both `hours` and `since`, since after until, and a window wider than 30
    days."""
    now = now or utcnow()
    if hours is not None and since is not None:
        raise ReconcileError("give hours (--hours) or since (--since), not both")
    if hours is not None and hours < 1:
        raise ReconcileError(f"hours must be at least 1, got {hours}")
    end = utc(until) if until is not None else now
    if hours is not None:
        start = end - dt.timedelta(hours=hours)
    elif since is not None:
        start = utc(since)
    else:
        start = default_since(engine, provider=Provider.STRIPE, now=end)
    if start > end:
        raise ReconcileError(f"since ({_iso(start)}) is after until ({_iso(end)})")
    if end - start > MAX_WINDOW:
        raise ReconcileError(
            f"the window {_iso(start)} .. {_iso(end)} is wider than 30 days: Stripe keeps "
            "events for 30 days, list at most that"
        )
    return Window(start, end)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


# --- Stripe --------------------------------------------------------------------------------------


def default_stripe_types() -> frozenset[str]:
    """Every Stripe event type a registered handler applies."""
    return frozenset(t for p, t in default_registry().event_types() if p is Provider.STRIPE)


def parse_types(text: str | Sequence[str] | None) -> frozenset[str] | None:
    """`--types a.b,c.d` (or a list) as a set; None (the default types) when empty."""
    items = text.split(",") if isinstance(text, str) else list(text or ())
    types = {t.strip() for t in items if t.strip()}
    for t in types:
        try:
            check_identifier(t, "event type")
        except PayloadError:
            raise ReconcileError(f"{t!r} is not a Stripe event type") from None
        if "." not in t:
            raise ReconcileError(f"{t!r} is not a Stripe event type (such as charge.refunded)")
    return frozenset(types) or None


class EventPages(Protocol):
    """Pages of a provider's events created in a window (`providers.stripe_api.StripeEvents`)."""

    def pages(self, *, created_gte: int, created_lte: int) -> Iterator[list[dict[str, Any]]]: ...


@dataclass(frozen=True)
class Recovered:
    """An event a reconciliation took in (or, on a dry run, would have)."""

    event: EventRef | None  # None on a dry run: nothing was written
    provider_event_id: str
    event_type: str
    created: dt.datetime  # the provider's own timestamp
    outcome: SweepOutcome  # dispatched, dispatch_failed, or would_dispatch on a dry run

    def as_json(self) -> dict[str, Any]:
        return {
            "id": None if self.event is None else self.event.id,
            "provider_event_id": self.provider_event_id,
            "event_type": self.event_type,
            "created": _iso(self.created),
            "outcome": self.outcome.value,
        }


@dataclass(frozen=True)
class PageReport:
    """One listed page: what a progress line says."""

    number: int
    listed: int
    known: int
    recovered: int


@dataclass(frozen=True)
class StripeReconciliation:
    sweep_id: int | None  # None on a dry run
    window: Window
    types: frozenset[str]
    dry_run: bool
    pages: int
    listed_by_type: dict[str, int]  # events of the applied types in the window
    known_by_type: dict[str, int]
    recovered: tuple[Recovered, ...]
    other_types: int  # listed events of types outside `types`: not taken in

    @property
    def listed(self) -> int:
        return sum(self.listed_by_type.values())

    @property
    def known(self) -> int:
        return sum(self.known_by_type.values())

    @property
    def recovered_by_type(self) -> dict[str, int]:
        return dict(sorted(Counter(r.event_type for r in self.recovered).items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "provider": Provider.STRIPE.value,
            "since": _iso(self.window.since),
            "until": _iso(self.window.until),
            "dry_run": self.dry_run,
            "pages": self.pages,
            "listed": self.listed,
            "known": self.known,
            "recovered": len(self.recovered),
            "by_type": self.recovered_by_type,
            "other_types": self.other_types,
            "events": [r.as_json() for r in self.recovered],
        }

    def render_text(self) -> str:
        title = "Dry run (nothing written)" if self.dry_run else f"Reconciliation #{self.sweep_id}"
        lines = [
            f"{title}: stripe events created {_iso(self.window.since)} .. "
            f"{_iso(self.window.until)}",
        ]
        recovered = self.recovered_by_type
        word = "would recover" if self.dry_run else "recovered"
        if self.listed_by_type:
            width = max(len(t) for t in self.listed_by_type)
            lines.append(f"  {'type':<{width}}  {'listed':>7}  {'known':>7}  {word:>13}")
            for t, n in sorted(self.listed_by_type.items()):
                lines.append(
                    f"  {t:<{width}}  {n:>7}  {self.known_by_type.get(t, 0):>7}  "
                    f"{recovered.get(t, 0):>13}"
                )
        others = f"; {self.other_types} of other types, left out" if self.other_types else ""
        lines.append(
            f"Total: {_plural(self.pages, 'page')}, {self.listed} listed, {self.known} known, "
            f"{len(self.recovered)} {word}{others}"
        )
        lines.extend(self._advice())
        return "\n".join(lines)

    def _advice(self) -> list[str]:
        if not self.recovered:
            return ["Every listed event had reached us: nothing was missed."]
        first = min(r.created for r in self.recovered)
        last = max(r.created for r in self.recovered)
        failed = sum(r.outcome is SweepOutcome.DISPATCH_FAILED for r in self.recovered)
        when = f"at {_iso(first)}" if first == last else f"between {_iso(first)} and {_iso(last)}"
        n = len(self.recovered)
        lines = [
            f"{_plural(n, 'event')} never reached the receiver, created {when}.",
            "Check the webhook endpoint in Stripe's dashboard for that time: is it enabled, did "
            "it answer 2xx, does its signing secret match STRIPE_WEBHOOK_SECRET?",
        ]
        if self.dry_run:
            lines.append("Run again without --dry-run to take them in.")
        if failed:
            lines.append(
                f"{failed} of them could not be handed to processing: the sweep hands them on "
                "again (dispatch_lost)."
            )
        return lines


@dataclass
class _Tally:
    pages: int = 0
    listed: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)
    recovered: list[Recovered] = field(default_factory=list)
    other_types: int = 0

    def counts(self) -> Counts:
        dispatched = sum(r.outcome is SweepOutcome.DISPATCHED for r in self.recovered)
        return Counts(
            scanned=sum(self.listed.values()),
            dispatched=dispatched,
            skipped=sum(self.known.values()),
        )


def reconcile_stripe(
    engine: Engine,
    source: EventPages,
    dispatcher: Dispatcher,
    *,
    window: Window,
    minutes: int,
    types: frozenset[str] | None = None,
    dry_run: bool = False,
    trigger: SweepTrigger = SweepTrigger.CLI,
    dagster_run_id: str | None = None,
    on_page: Callable[[PageReport], None] | None = None,
) -> StripeReconciliation:
    """List Stripe's events in `window` and take in, through the gate, those we lack (module
    docstring). Raises `ProviderUnavailable` (nothing written when the first page fails; the
    audit row closed `failed` when a later one does, what was taken in kept)."""
    wanted = types or default_stripe_types()
    tally = _Tally()
    pages = _asked(source.pages(created_gte=window.created_gte, created_lte=window.created_lte))
    first = next(pages, [])  # the provider answers before anything is written
    sweep_id = (
        None
        if dry_run
        else _open_audit(engine, Provider.STRIPE, window, trigger, dagster_run_id, minutes)
    )
    try:
        for page in _chain(first, pages):
            report = _take_page(
                engine,
                dispatcher,
                page,
                tally,
                window=window,
                types=wanted,
                minutes=minutes,
                sweep_id=sweep_id,
            )
            log.info(
                "reconcile stripe: page %d: %d listed, %d known, %d %s",
                report.number,
                report.listed,
                report.known,
                report.recovered,
                "would be recovered" if dry_run else "recovered",
            )
            if on_page is not None:
                on_page(report)
    except BaseException as exc:
        if sweep_id is not None:
            close_sweep_run(
                engine,
                sweep_id,
                status=SweepStatus.FAILED,
                counts=tally.counts(),
                error=str(exc) or type(exc).__name__,
            )
        raise
    if sweep_id is not None:
        close_sweep_run(engine, sweep_id, status=SweepStatus.SUCCEEDED, counts=tally.counts())
    return StripeReconciliation(
        sweep_id=sweep_id,
        window=window,
        types=wanted,
        dry_run=dry_run,
        pages=tally.pages,
        listed_by_type=dict(tally.listed),
        known_by_type=dict(tally.known),
        recovered=tuple(tally.recovered),
        other_types=tally.other_types,
    )


def reconcile_stripe_api(
    engine: Engine,
    settings: Settings,
    dispatcher: Dispatcher,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    hours: int | None = None,
    **options: Any,
) -> StripeReconciliation:
    """`reconcile_stripe` over Stripe's Events API, as the CLI and the Dagster asset run it: the
    deployment's key (refused first when missing), its window (`stripe_window`), API base and
    sweep minutes; `options` are `reconcile_stripe`'s own (types, dry_run, the audit's trigger
    and run id, on_page)."""
    key = stripe_key(settings)
    window = stripe_window(engine, since=since, until=until, hours=hours)
    with StripeApi(key, settings.stripe_api_base) as api:
        minutes = settings.stuck_requeue_minutes
        return reconcile_stripe(
            engine, StripeEvents(api), dispatcher, window=window, minutes=minutes, **options
        )


def _asked(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """`pages`, the API's failures as `ProviderUnavailable`."""
    try:
        yield from pages
    except StripeApiError as exc:
        raise ProviderUnavailable(str(exc)) from None


def _chain(
    first: list[dict[str, Any]], rest: Iterator[list[dict[str, Any]]]
) -> Iterator[list[dict[str, Any]]]:
    yield first
    yield from rest


def _open_audit(
    engine: Engine,
    provider: Provider,
    window: Window | None,
    trigger: SweepTrigger,
    dagster_run_id: str | None,
    minutes: int,
) -> int:
    return store.in_transaction(
        engine,
        lambda conn: store.insert_sweep_run(
            conn,
            started_at=utcnow(),
            trigger=trigger.value,
            dagster_run_id=dagster_run_id,
            minutes=minutes,
            provider=provider.value,
            kind=SweepKind.RECONCILE,
            window=None if window is None else (window.since, window.until),
        ),
    )


def _take_page(
    engine: Engine,
    dispatcher: Dispatcher,
    page: list[dict[str, Any]],
    tally: _Tally,
    *,
    window: Window,
    types: frozenset[str],
    minutes: int,
    sweep_id: int | None,
) -> PageReport:
    tally.pages += 1
    in_scope: list[tuple[stripe_events.StripeEventHeader, dict[str, Any]]] = []
    for raw in page:
        try:
            header = stripe_events.event_header(raw)
        except PayloadError as exc:
            raise ProviderUnavailable(f"Stripe listed an event we cannot read: {exc}") from None
        if not window.holds(header.created):
            continue  # an API that ignored the filter: not this window's
        if header.type not in types:
            tally.other_types += 1
            continue
        in_scope.append((header, raw))
    with engine.connect() as conn:
        known = store.known_provider_event_ids(
            conn, provider=Provider.STRIPE, provider_event_ids=[h.id for h, _ in in_scope]
        )
    taken: list[Recovered] = []
    received: list[tuple[gate.ReceiveResult, stripe_events.StripeEventHeader, dt.datetime]] = []
    known_here = 0
    for header, raw in in_scope:
        tally.listed[header.type] += 1
        created = _EPOCH + dt.timedelta(seconds=header.created)
        if header.id in known:
            tally.known[header.type] += 1
            known_here += 1
            continue
        if sweep_id is None:
            taken.append(
                Recovered(None, header.id, header.type, created, SweepOutcome.WOULD_DISPATCH)
            )
            continue
        result = gate.receive(
            engine,
            provider=Provider.STRIPE,
            provider_event_id=header.id,
            event_type=header.type,
            payload=json.dumps(raw),
            minutes=minutes,
            received_via=ReceivedVia.API,
        )
        if not result.created:  # a delivery got there first, since the page's query
            tally.known[header.type] += 1
            known_here += 1
            continue
        received.append((result, header, created))
    outcomes = _hand_on(dispatcher, [result for result, _, _ in received])
    taken += [
        Recovered(result.event, header.id, header.type, created, outcome)
        for (result, header, created), outcome in zip(received, outcomes, strict=True)
    ]
    if sweep_id is not None:
        _audit(engine, sweep_id, taken)
    tally.recovered.extend(taken)
    return PageReport(tally.pages, len(in_scope), known_here, len(taken))


def _hand_on(dispatcher: Dispatcher, results: Sequence[gate.ReceiveResult]) -> list[SweepOutcome]:
    """Dispatch the recovered events together (`dispatch_many`), each result's outcome; a failed
    hand-off is left to the sweep (`dispatch_lost`)."""
    ours = [r.event for r in results if r.should_dispatch]
    unsent = unsent_errors(dispatcher, ours)
    outcomes = []
    for result in results:
        if not result.should_dispatch:
            outcomes.append(SweepOutcome.SKIPPED)
        elif result.event.id in unsent:
            log.warning(
                "reconcile: could not hand on %s %s (%s): the sweep will: %s",
                result.event.provider.value,
                result.event.provider_event_id,
                result.event.event_type,
                type(unsent[result.event.id]).__name__,
            )
            outcomes.append(SweepOutcome.DISPATCH_FAILED)
        else:
            outcomes.append(SweepOutcome.DISPATCHED)
    return outcomes


def _audit(engine: Engine, sweep_id: int, taken: Sequence[Recovered]) -> None:
    rows = [(r.event.id, MISSED_DELIVERY, r.outcome) for r in taken if r.event is not None]
    if rows:
        store.in_transaction(
            engine, lambda conn: store.insert_sweep_events(conn, sweep_id=sweep_id, rows=rows)
        )


# --- Monetbil ----------------------------------------------------------------------------------


class MonetbilOutcome:
    KNOWN = "known"
    RECOVERED = "recovered"
    WOULD_RECOVER = "would_recover"
    UNRESOLVED = "unresolved"


# checkPayment reports a test-mode transaction with `testmode: 1`; its notification says 7/8/9.
_TEST_MODE_STATUS = {"1": "7", "0": "8", "-1": "9"}


@dataclass(frozen=True)
class Resolution:
    """What a Monetbil reconciliation made of one transaction id."""

    transaction_id: str
    outcome: str  # MonetbilOutcome
    provider_event_id: str | None = None  # `<transaction_id>:<status>`, once resolved
    event_type: str | None = None
    event: EventRef | None = None
    dispatch: SweepOutcome | None = None
    why: str | None = None  # unresolved: what the answer lacked

    def as_json(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "outcome": self.outcome,
            "id": None if self.event is None else self.event.id,
            "provider_event_id": self.provider_event_id,
            "event_type": self.event_type,
            "dispatch": None if self.dispatch is None else self.dispatch.value,
            "why": self.why,
        }


@dataclass(frozen=True)
class MonetbilReconciliation:
    sweep_id: int | None
    dry_run: bool
    resolutions: tuple[Resolution, ...]

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.resolutions)

    def as_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "provider": Provider.MONETBIL.value,
            "dry_run": self.dry_run,
            "asked": len(self.resolutions),
            "known": self.count(MonetbilOutcome.KNOWN),
            "recovered": self.count(MonetbilOutcome.RECOVERED)
            + self.count(MonetbilOutcome.WOULD_RECOVER),
            "unresolved": self.count(MonetbilOutcome.UNRESOLVED),
            "transactions": [r.as_json() for r in self.resolutions],
        }

    def render_text(self) -> str:
        title = "Dry run (nothing written)" if self.dry_run else f"Reconciliation #{self.sweep_id}"
        asked = _plural(len(self.resolutions), "transaction")
        lines = [f"{title}: monetbil, {asked} asked of checkPayment"]
        for r in self.resolutions:
            detail = r.why if r.outcome == MonetbilOutcome.UNRESOLVED else r.provider_event_id
            lines.append(f"  {r.transaction_id}: {r.outcome.replace('_', ' ')} ({detail})")
        lines.append(
            f"Total: {self.count(MonetbilOutcome.KNOWN)} known, "
            f"{self.count(MonetbilOutcome.RECOVERED) + self.count(MonetbilOutcome.WOULD_RECOVER)} "
            f"{'would be recovered' if self.dry_run else 'recovered'}, "
            f"{self.count(MonetbilOutcome.UNRESOLVED)} unresolved"
        )
        return "\n".join(lines)


def parse_transaction_ids(ids: Iterable[str]) -> list[str]:
    """Monetbil transaction ids, duplicates dropped, order kept; `ReconcileError` for a bad one."""
    seen: dict[str, None] = {}
    for raw in ids:
        try:
            seen[check_identifier(raw.strip(), "transaction id")] = None
        except PayloadError as exc:
            raise ReconcileError(f"{raw!r}: {exc}") from None
    if not seen:
        raise ReconcileError("name at least one Monetbil transaction id")
    return list(seen)


def notification_for(transaction_id: str, check: PaymentCheck) -> tuple[str, str, str] | str:
    """The notification a checkPayment answer stands for: `(event id, event type, payload)`, or
    why it cannot be one (what a payment row would lack)."""
    if check.status is None:
        return "checkPayment knows no such transaction"
    status = _TEST_MODE_STATUS.get(check.status, check.status) if check.testmode else check.status
    try:
        event_type = monetbil.event_type_for({"status": status})
    except PayloadError:
        return f"status {check.status} is not a final Monetbil status"
    if check.payment_ref is None:
        return "the answer names no payment_ref"
    if check.amount is None:
        return "the answer has no amount"
    fields = {
        "transaction_id": transaction_id,
        "status": status,
        monetbil.REFERENCE_FIELD: check.payment_ref,
        "amount": format(check.amount, "f"),
    }
    if check.currency:
        fields["currency"] = check.currency
    if check.phone:
        fields["msisdn"] = check.phone
    if check.fee is not None:
        fields["fee"] = format(check.fee, "f")
    payload = monetbil.canonical_payload(fields)
    try:
        monetbil.payment_update(event_type, payload)
    except PayloadError as exc:
        return str(exc)
    return f"{transaction_id}:{status}", event_type, payload


def reconcile_monetbil(
    engine: Engine,
    check: Callable[[str], PaymentCheck],
    dispatcher: Dispatcher,
    transaction_ids: Sequence[str],
    *,
    minutes: int,
    dry_run: bool = False,
    trigger: SweepTrigger = SweepTrigger.CLI,
    dagster_run_id: str | None = None,
) -> MonetbilReconciliation:
    """Ask checkPayment about each transaction, then take in the final statuses we lack through
    the gate. Every answer is in before anything is written: an unreachable checkPayment raises
    `ProviderUnavailable` and writes nothing."""
    ids = parse_transaction_ids(transaction_ids)
    answers: dict[str, tuple[str, str, str] | str] = {}
    for tx in ids:
        try:
            answers[tx] = notification_for(tx, check(tx))
        except CheckPaymentUnreachable as exc:
            raise ProviderUnavailable(f"{exc} (asking about {tx})") from None
        except ConfirmationUnavailable as exc:
            answers[tx] = str(exc)
    resolved = [a[0] for a in answers.values() if isinstance(a, tuple)]
    with engine.connect() as conn:
        known = store.known_provider_event_ids(
            conn, provider=Provider.MONETBIL, provider_event_ids=resolved
        )
    sweep_id = (
        None
        if dry_run
        else _open_audit(engine, Provider.MONETBIL, None, trigger, dagster_run_id, minutes)
    )
    out: list[Resolution] = []
    try:
        for tx in ids:
            out.append(_resolve(engine, tx, answers[tx], known, minutes, dry_run))
        out = _hand_on_recovered(dispatcher, out)
        if sweep_id is not None:
            _audit_monetbil(engine, sweep_id, out)
    except BaseException as exc:
        if sweep_id is not None:
            close_sweep_run(
                engine, sweep_id, status=SweepStatus.FAILED, error=str(exc) or type(exc).__name__
            )
        raise
    if sweep_id is not None:
        recovered = [r for r in out if r.outcome == MonetbilOutcome.RECOVERED]
        close_sweep_run(
            engine,
            sweep_id,
            status=SweepStatus.SUCCEEDED,
            counts=Counts(
                scanned=len(out),
                dispatched=sum(r.dispatch is SweepOutcome.DISPATCHED for r in recovered),
                skipped=len(out) - len(recovered),
            ),
        )
    return MonetbilReconciliation(sweep_id, dry_run, tuple(out))


def _resolve(
    engine: Engine,
    tx: str,
    answer: tuple[str, str, str] | str,
    known: set[str],
    minutes: int,
    dry_run: bool,
) -> Resolution:
    if isinstance(answer, str):
        return Resolution(tx, MonetbilOutcome.UNRESOLVED, why=answer)
    event_id, event_type, payload = answer
    if event_id in known:
        return Resolution(tx, MonetbilOutcome.KNOWN, event_id, event_type)
    if dry_run:
        return Resolution(tx, MonetbilOutcome.WOULD_RECOVER, event_id, event_type)
    result = gate.receive(
        engine,
        provider=Provider.MONETBIL,
        provider_event_id=event_id,
        event_type=event_type,
        payload=payload,
        minutes=minutes,
        received_via=ReceivedVia.API,
    )
    if not result.created:
        return Resolution(tx, MonetbilOutcome.KNOWN, event_id, event_type, result.event)
    return Resolution(tx, MonetbilOutcome.RECOVERED, event_id, event_type, result.event)


def _hand_on_recovered(dispatcher: Dispatcher, out: list[Resolution]) -> list[Resolution]:
    """Dispatch the recovered transactions' events together; each with its dispatch outcome."""
    events = [r.event for r in out if r.outcome == MonetbilOutcome.RECOVERED and r.event]
    refs = {e.id: e for e in events}
    unsent = unsent_errors(dispatcher, list(refs.values()))
    for event_id, error in unsent.items():
        ref = refs[event_id]
        log.warning(
            "reconcile: could not hand on %s %s (%s): the sweep will: %s",
            ref.provider.value,
            ref.provider_event_id,
            ref.event_type,
            type(error).__name__,
        )
    return [
        dataclasses.replace(
            r,
            dispatch=SweepOutcome.DISPATCH_FAILED
            if r.event.id in unsent
            else SweepOutcome.DISPATCHED,
        )
        if r.outcome == MonetbilOutcome.RECOVERED and r.event is not None
        else r
        for r in out
    ]


def _audit_monetbil(engine: Engine, sweep_id: int, out: Sequence[Resolution]) -> None:
    rows = [
        (r.event.id, MISSED_DELIVERY, r.dispatch)
        for r in out
        if r.outcome == MonetbilOutcome.RECOVERED and r.event is not None and r.dispatch
    ]
    if rows:
        store.in_transaction(
            engine, lambda conn: store.insert_sweep_events(conn, sweep_id=sweep_id, rows=rows)
        )

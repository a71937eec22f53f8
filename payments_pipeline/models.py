"""The product's vocabulary: statuses, outcomes, reasons and the frozen rows the store returns.

Every status and outcome the tables, the CLI and the JSON carry is a `StrEnum` here, so a typo is an
AttributeError and not a silently unmatched string in a WHERE clause.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

# The longest provider event id, event type and payment reference stored (one column width; the
# gate and the providers refuse longer).
KEY_LENGTH = 255
# The longest reason a dismissal keeps (`sweep_runs.note`); `dismiss` refuses longer.
NOTE_LENGTH = 500


class Provider(StrEnum):
    STRIPE = "stripe"
    MONETBIL = "monetbil"


PROVIDERS: tuple[Provider, ...] = (Provider.STRIPE, Provider.MONETBIL)


class EventStatus(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"
    DEAD = "dead"
    # Settled by a person (`dismiss`): never processed, no effect, never swept nor counted as
    # dead, stuck or expired.
    DISMISSED = "dismissed"


class GateOutcome(StrEnum):
    """What `gate.receive` decided; only DISPATCHED and REDISPATCHED hand the event on."""

    ALREADY_PROCESSED = "already_processed"
    DISPATCHED = "dispatched"
    REDISPATCHED = "redispatched"
    RECEIVED = "received"


class SweepReason(StrEnum):
    DISPATCHED_AT_NULL = "dispatched_at_null"
    FAILED_OLD = "failed_old"
    DISPATCH_LOST = "dispatch_lost"
    PROCESSING_STALLED = "processing_stalled"


class ReceivedVia(StrEnum):
    """How an event reached `webhook_events`."""

    WEBHOOK = "webhook"  # a delivery to the receiver
    API = "api"  # fetched from the provider's API by a reconciliation


class SweepKind(StrEnum):
    """What a `sweep_runs` row audits."""

    SWEEP = "sweep"
    REPLAY = "replay"
    DISMISS = "dismiss"
    RECONCILE = "reconcile"


# The `sweep_events.reason` of an event a reconciliation recovered (it never reached the receiver).
MISSED_DELIVERY = "missed_delivery"
# The `sweep_events.reason` (and outcome) of an event a person settled by hand (`dismiss`).
DISMISSED = "dismissed"


class SweepOutcome(StrEnum):
    DISPATCHED = "dispatched"
    SKIPPED = "skipped"
    # The claim succeeded but the dispatcher raised: the row keeps its fresh dispatched_at and
    # becomes `dispatch_lost` after `minutes`, so the next sweep recovers it.
    DISPATCH_FAILED = "dispatch_failed"
    WOULD_DISPATCH = "would_dispatch"  # --dry-run only: would have been claimed; nothing written
    DISMISSED = "dismissed"  # a dismissal: settled by hand, never dispatched


class SweepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SweepTrigger(StrEnum):
    CLI = "cli"
    SCHEDULE = "schedule"
    SENSOR = "sensor"
    UI = "ui"
    API = "api"


class DispatchMode(StrEnum):
    """How a claimed event reaches processing (`PAYMENTS_DISPATCH`; `serve --dispatch`)."""

    INLINE = "inline"  # process it in the caller (the receiver: after the response went out)
    TABLE = "table"  # the claimed row is the job: `payments-pipeline worker` processes take it
    CELERY = "celery"  # publish a Celery task; Celery workers process it
    NONE = "none"  # the receiver only: intake alone, a sweep or a worker picks it up later


# The engines a sweep, a replay and `PAYMENTS_DISPATCH` may name (`none` is the receiver's own).
PROCESSING_DISPATCH_MODES = (DispatchMode.INLINE, DispatchMode.TABLE, DispatchMode.CELERY)


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class ProcessOutcome(StrEnum):
    """What one processing attempt did (`processing.process_event`)."""

    PROCESSED = "processed"
    FAILED = "failed"
    DEAD = "dead"
    NOT_CLAIMED = "not_claimed"  # someone else holds it, or it is not in a claimable status
    STALE = "stale"  # our attempt was fenced out (re-claimed after a stall): nothing committed


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: int
    provider: Provider
    provider_event_id: str
    event_type: str
    status: EventStatus
    payload: str
    attempts: int
    attempts_base: int  # attempts at the last replay; the retry budget counts from here
    dispatched_at: dt.datetime | None
    processing_started_at: dt.datetime | None
    processed_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class EventRef:
    """The fields of an event that may be logged and audited: never the payload."""

    id: int
    provider: Provider
    provider_event_id: str
    event_type: str


@dataclass(frozen=True, slots=True)
class EventState:
    """Where an event stands, without its payload: what a replay's report and the dead-event
    lists show (`attempts - attempts_base`: the attempts of its current retry budget)."""

    event: EventRef
    status: EventStatus
    attempts: int
    attempts_base: int
    last_error: str | None
    updated_at: dt.datetime

    @property
    def attempts_used(self) -> int:
        return self.attempts - self.attempts_base


@dataclass(frozen=True, slots=True)
class Payment:
    """A `payments` row. Amounts are integer minor units of `currency` (ISO 4217 exponent)."""

    id: int
    provider: Provider
    reference: str
    status: PaymentStatus
    amount: int | None  # what the payment is for
    amount_received: int | None  # what was captured or paid
    amount_refunded: int  # sum refunded so far
    currency: str | None
    livemode: bool  # False: Stripe `livemode: false`, Monetbil test statuses 7/8/9
    last_event_id: int | None
    last_event_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PaymentUpdate:
    """What one provider event says about one payment, parsed from its payload.

    `occurred_at` is the provider's own timestamp (Stripe `created`) when it has one; it orders
    events for the same payment so an older event never overwrites a newer state. Amounts are
    integer minor units; None: the event does not say. `amounts_fill_only`: the event's `amount`
    and `amount_received` only fill what the payment does not know yet (a refund names the
    charge's amounts, which must not overwrite the PaymentIntent's); `amount_refunded` is the
    cumulative sum refunded, so the larger of the stored and the event's value wins.
    """

    provider: Provider
    reference: str
    status: PaymentStatus
    amount: int | None
    currency: str | None
    occurred_at: dt.datetime | None
    amount_received: int | None = None
    amount_refunded: int | None = None
    livemode: bool = True
    amounts_fill_only: bool = False


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What a `payments` row says about its payment (no ids, no bookkeeping): what the lifecycle
    rule (`payment_state.apply_update`) decides on and decides."""

    status: PaymentStatus
    amount: int | None
    amount_received: int | None
    amount_refunded: int
    currency: str | None
    livemode: bool
    last_event_at: dt.datetime | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentFacts:
        return cls(
            payment.status,
            payment.amount,
            payment.amount_received,
            payment.amount_refunded,
            payment.currency,
            payment.livemode,
            payment.last_event_at,
        )


def utcnow() -> dt.datetime:
    """Naive UTC with microseconds: the one representation every table column stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)

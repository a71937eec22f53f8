"""Table definitions and every SQL statement of the product (SQLAlchemy 2 Core).

Each function takes a `Connection` and keyword-only arguments and returns frozen rows or a decision
taken from a row count. Callers own the transaction (`engine.begin()`). Every state change that
decides who does the work is a conditional UPDATE whose WHERE repeats the condition it claims on, so
two callers can never both win: the database serialises them and the loser sees 0 rows.

Timestamps are naive UTC with microseconds, always bound from Python (`models.utcnow()`), never
`CURRENT_TIMESTAMP`: SQLite compares them as text, which is only ordered if every value has the same
format, and MariaDB needs `DATETIME(6)` to keep the microseconds.

One module per table or concern: `schema` (tables, types, metadata), `engine` (engines,
transactions, retries), `events` (the webhook events' reads, gate, processing, replay, queue),
`stuck` (the four stuck reasons, the sweep's scan and claim, the sensor's window), `payments`,
`audit` (sweep_runs, sweep_events), `reads` (status views). Callers use this package's names.

`store.payments` is the table: the schema's names are imported after the submodules, so the table
rebinds the name the import of the `payments` module set on this package.
"""

from .audit import (
    fail_running_sweep_of_dagster_run,
    finish_sweep_run,
    first_reconciled_start,
    insert_sweep_events,
    insert_sweep_run,
    reconciled_windows,
    set_sweep_event_outcome,
)
from .engine import changed_one, in_transaction, is_retryable, make_engine, normalize_url
from .events import (
    _dispatched_since_last_attempt,
    bury_exhausted,
    claim_dispatched_batch,
    claim_failed_for_redispatch,
    claim_for_processing,
    claim_undispatched,
    get_event,
    get_event_refs,
    get_event_state,
    insert_event_if_new,
    insert_events,
    known_provider_event_ids,
    mark_exhausted_dead,
    mark_failed,
    mark_processed,
    requeue_for_replay,
)
from .payments import (
    P,
    get_payment,
    insert_ledger_entry,
    insert_payment_if_absent,
    ledger_has_event,
    list_payments,
    payment_totals,
    update_payment_if_unchanged,
)
from .reads import (
    count_by_provider_status,
    count_dead_events,
    count_open_by_provider_status,
    dead_since,
    event_statuses,
    list_event_refs,
    oldest_created_at,
    ping,
)
from .schema import (
    ID,
    KEY_LENGTH,
    PAYLOAD,
    TS,
    E,
    metadata,
    payment_ledger,
    payments,
    sweep_events,
    sweep_runs,
    webhook_events,
)
from .stuck import (
    STUCK_REASONS,
    Cutoffs,
    StuckCount,
    StuckReason,
    any_stuck_condition,
    claim_stuck,
    count_expired,
    count_newly_stuck,
    list_expired,
    select_stuck,
    stuck_condition,
    stuck_since,
)

__all__ = [
    "ID",
    "KEY_LENGTH",
    "PAYLOAD",
    "STUCK_REASONS",
    "TS",
    "Cutoffs",
    "E",
    "P",
    "StuckCount",
    "StuckReason",
    "_dispatched_since_last_attempt",
    "any_stuck_condition",
    "bury_exhausted",
    "changed_one",
    "claim_dispatched_batch",
    "claim_failed_for_redispatch",
    "claim_for_processing",
    "claim_stuck",
    "claim_undispatched",
    "count_by_provider_status",
    "count_dead_events",
    "count_expired",
    "count_newly_stuck",
    "count_open_by_provider_status",
    "dead_since",
    "event_statuses",
    "fail_running_sweep_of_dagster_run",
    "finish_sweep_run",
    "first_reconciled_start",
    "get_event",
    "get_event_refs",
    "get_event_state",
    "get_payment",
    "in_transaction",
    "insert_event_if_new",
    "insert_events",
    "insert_ledger_entry",
    "insert_payment_if_absent",
    "insert_sweep_events",
    "insert_sweep_run",
    "is_retryable",
    "known_provider_event_ids",
    "ledger_has_event",
    "list_event_refs",
    "list_expired",
    "list_payments",
    "make_engine",
    "mark_exhausted_dead",
    "mark_failed",
    "mark_processed",
    "metadata",
    "normalize_url",
    "oldest_created_at",
    "payment_ledger",
    "payment_totals",
    "payments",
    "ping",
    "reconciled_windows",
    "requeue_for_replay",
    "select_stuck",
    "set_sweep_event_outcome",
    "stuck_condition",
    "stuck_since",
    "sweep_events",
    "sweep_runs",
    "update_payment_if_unchanged",
    "webhook_events",
]

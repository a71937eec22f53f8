"""PostgreSQL: row locks skipped through a MATERIALIZED CTE, arrays for id lists, and the
server's idle-in-transaction timeout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql

from ...models import SweepOutcome
from ..schema import E, sweep_events
from .base import Basic, Ids, Where, first_matching


def _ids_array(name: str, ids: Sequence[int]) -> Any:
    """One PostgreSQL array parameter instead of one bound parameter per id."""
    return sa.bindparam(name, value=list(ids), type_=postgresql.ARRAY(sa.BigInteger))


class PostgreSQL(Basic):
    name = "postgresql"
    dialect_insert = staticmethod(postgresql.insert)

    def idle_timeout_statement(self, dbapi_connection: Any, seconds: int) -> str | None:
        return f"SET idle_in_transaction_session_timeout = {seconds * 1000}"

    def serial_statement(self) -> str | None:
        """A parallel plan starts worker processes: ~5 ms of a sensor tick whose queries take
        ~2 ms (the backlog's UNION ALL over the stuck reasons on 1M rows, EXPLAIN ANALYZE)."""
        return "SET max_parallel_workers_per_gather = 0"

    def unflushed_commit_statement(self) -> str | None:
        return "SET LOCAL synchronous_commit = off"

    def claimable(self, ids: Ids, where: Where) -> Where:
        """The rows among `ids` that match and that no other transaction holds (SKIP
        LOCKED): rows locked by a concurrent claim belong to it, and are never waited on.

        The locking SELECT is a MATERIALIZED CTE over `id = ANY(array)`: one primary-key probe
        per id. As `IN (SELECT ... FOR UPDATE SKIP LOCKED)` the planner misjudged the row count
        and chose a nested-loop semi join that re-ran the subquery per row: 0.2 s per 2,000-id
        batch, 6 s per 1,000-id batch (benchmarks/sweep_benchmark.py, EXPLAIN ANALYZE).
        """
        locked = (
            sa.select(E.id)
            .where(E.id == sa.any_(_ids_array("claim_ids", ids)), where)
            .with_for_update(skip_locked=True)
            .cte("locked")
            .prefix_with("MATERIALIZED")
        )
        return E.id == locked.c.id

    def batch_claimable(self, where: Where, limit: int) -> Where:
        """The first `limit` matching rows that no other transaction holds (SKIP LOCKED): N
        workers claiming at once each take rows of their own, never waiting on each other. A
        MATERIALIZED CTE, for the same reason as `claimable`'s: the locking SELECT runs once.

        The UPDATE finds the picked rows through `id = ANY(ARRAY(SELECT id FROM picked))`, one
        primary-key probe each: joined to the CTE instead, the planner hashed the whole table
        whenever it judged it small (a sequential scan per poll)."""
        picked = (
            first_matching(where, limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        return E.id == sa.any_(sa.func.array(sa.select(picked.c.id).scalar_subquery()))

    def insert_sweep_events(
        self, conn: Connection, *, sweep_id: int, rows: Sequence[tuple[int, str, SweepOutcome]]
    ) -> None:
        # One INSERT ... SELECT over unnest(arrays): executemany would send one row per statement.
        u = (
            sa.func.unnest(
                _ids_array("audit_ids", [i for i, _, _ in rows]),
                sa.bindparam(
                    "audit_reasons", [str(r) for _, r, _ in rows], postgresql.ARRAY(sa.Text)
                ),
                sa.bindparam(
                    "audit_outcomes", [o.value for _, _, o in rows], postgresql.ARRAY(sa.Text)
                ),
            )
            .table_valued("event_id", "reason", "outcome")
            .render_derived(name="audit")
        )
        conn.execute(
            sa.insert(sweep_events).from_select(
                ["sweep_id", "event_id", "reason", "outcome"],
                sa.select(
                    sa.literal(sweep_id, sa.BigInteger), u.c.event_id, u.c.reason, u.c.outcome
                ),
            )
        )

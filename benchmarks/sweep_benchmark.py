"""Benchmark of the requeue sweep on PostgreSQL: floor, claim phase, per-row seed loop, empty sweep.

Creates its own database `pp_bench_<random>` on the server given by `--postgres-url`, migrates it
with `migrations.upgrade`, loads the fixture server-side (`INSERT ... SELECT generate_series`),
freezes and analyses it, and uses it as a *template*: every measurement that writes runs on a fresh
`CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY` copy (byte-identical heap, indexes, visibility
map and statistics), warmed the same way before the clock starts. Every database it created is
dropped at the end, also on error, Ctrl-C or SIGTERM.

Measured in one run (see docs/PERFORMANCE.md for the method and the figures):

(a) floor: one `UPDATE ... SET dispatched_at, updated_at WHERE <all four reasons OR-ed, in window>`;
(b) our sweep's claim phase: `begin_sweep` (scan) + `claim_candidates` (claim), then
    `dispatch_claimed` to a `NullDispatcher` and `finish_sweep`, so the whole sweep is reported too;
(c) the seed's loop: one autocommit `UPDATE ... WHERE id = ? AND <its condition>` per candidate on a
    sample, extrapolated linearly to all stuck rows;
(d) an empty `run_sweep` on the full table once nothing inside the window is stuck (median of N).

Also: claim time per batch size; time inside `cursor.execute` per phase, statement and claim
batch; EXPLAIN (ANALYZE, BUFFERS) of the four scans, `count_expired`, the first claim batch of each
reason and the floor.

    .venv/bin/python benchmarks/sweep_benchmark.py                      # 1M events, 100k stuck
    .venv/bin/python benchmarks/sweep_benchmark.py --quick              # 20k events, 2k stuck
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness
import sqlalchemy as sa
from harness import fmt_s, median, progress, verdict
from sqlalchemy import Connection, Engine, event

from payments_pipeline import migrations, store, sweep
from payments_pipeline.dispatch import NullDispatcher
from payments_pipeline.models import SweepReason, SweepTrigger, utcnow

# Shown with the server's version in the report's machine facts.
PG_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "random_page_cost",
    "synchronous_commit",
    "jit",
    "autovacuum",
    "max_wal_size",
)
MINUTES = 10  # SweepParams defaults, also used by the floor and the seed loop
STALLED_MINUTES = 30
MAX_AGE_DAYS = 7
# Reasons in fixture order: stuck row k (0-based in the permuted order) gets REASONS[k % 4].
REASONS: tuple[SweepReason, ...] = (
    SweepReason.DISPATCHED_AT_NULL,
    SweepReason.DISPATCH_LOST,
    SweepReason.FAILED_OLD,
    SweepReason.PROCESSING_STALLED,
)

# The floor (a): the four sweep reasons (docs/semantics.md) OR-ed, inside the window, both
# providers. Written out by hand (not built from the store package) so the document can quote
# it; the run checks it matches exactly the rows the sweep claims.
STUCK_WHERE = """
    provider IN ('stripe', 'monetbil')
    AND created_at >= :created_after
    AND (
        (status = 'received' AND dispatched_at IS NULL)
        OR (status = 'received' AND dispatched_at < :stuck_before)
        OR (status = 'failed'
            AND (dispatched_at IS NULL OR dispatched_at < :stuck_before)
            AND (next_attempt_at IS NULL OR next_attempt_at <= :now))
        OR (status = 'processing' AND processing_started_at < :stalled_before)
    )"""
FLOOR_SQL = f"UPDATE webhook_events SET dispatched_at = :now, updated_at = :now WHERE {STUCK_WHERE}"
COUNT_STUCK_SQL = f"SELECT count(*) FROM webhook_events WHERE {STUCK_WHERE}"

# The fixture, generated server-side. Row g (1..n) gets p = (g-1)*prime mod n, a permutation of
# 0..n-1 (prime coprime with n), so exactly `stuck` rows have p < stuck and they are spread evenly
# over the id range, as stuck rows are in a real table. p < stuck: stuck inside the window, reason
# p % 4, provider (p / 4) % 2; stuck <= p < stuck + expired: the same kinds, created 8-28 days ago;
# otherwise `processed`. Ids grow with created_at (rows arrive in time order), the window rows span
# [t0 - 6.5 d - 1 h, t0 - 1 h], so every stuck timestamp is well past the sweep's thresholds.
FIXTURE_SQL = """
INSERT INTO webhook_events (
    provider, provider_event_id, event_type, status, payload, attempts, attempts_base,
    dispatched_at, processing_started_at, processed_at, next_attempt_at, last_error,
    created_at, updated_at)
SELECT
    CASE WHEN prov = 0 THEN 'stripe' ELSE 'monetbil' END,
    CASE WHEN prov = 0 THEN 'evt_' || lpad(to_hex(g), 8, '0') || substr(md5(g::text), 1, 16)
         ELSE 'MB' || lpad(g::text, 12, '0') END,
    CASE WHEN prov = 0 THEN (ARRAY['payment_intent.succeeded', 'payment_intent.payment_failed',
                                   'charge.refunded', 'payment_intent.canceled'])[1 + g % 4]
         ELSE (ARRAY['payment.success', 'payment.failed', 'payment.cancelled'])[1 + g % 3] END,
    CASE WHEN kind = 0 THEN 'processed'
         WHEN reason IN (0, 1) THEN 'received'
         WHEN reason = 2 THEN 'failed'
         ELSE 'processing' END,
    CASE WHEN prov = 0 THEN
        '{"id":"evt_' || lpad(to_hex(g), 8, '0') || substr(md5(g::text), 1, 16)
        || '","object":"event","api_version":"2024-06-20","created":'
        || extract(epoch FROM created)::bigint
        || ',"type":"payment_intent.succeeded","livemode": false,"pending_webhooks": 1,'
        || '"request":{"id":"req_' || substr(md5('q' || g), 1, 14)
        || '","idempotency_key":"' || substr(md5('k' || g), 1, 24)
        || '"},"data":{"object":{"id":"pi_'
        || substr(md5('p' || g), 1, 24) || '","object":"payment_intent","amount":'
        || (100 + g % 99900) || ',"currency":"eur","customer":"cus_'
        || substr(md5('c' || g), 1, 14) || '","description":"Order ' || g
        || '","metadata":{"order_id":"' || g || '","reference":"'
        || substr(md5('r' || g), 1, 16)
        || '"},"status":"succeeded","latest_charge":"ch_' || substr(md5('h' || g), 1, 24)
        || '","payment_method":"pm_' || substr(md5('m' || g), 1, 24) || '"}}}'
    ELSE
        'service=' || substr(md5('svc'), 1, 32) || '&transaction_id=MB' || lpad(g::text, 12, '0')
        || '&transaction_uuid=' || md5('u' || g)
        || '&phone=2376' || lpad((g % 99999999)::text, 8, '0')
        || '&msisdn=2376' || lpad((g % 99999999)::text, 8, '0') || '&amount=' || (100 + g % 99900)
        || '&fee=' || (g % 500) || '&status=1&message=' || 'Payment+successful+' || md5('g' || g)
        || '&currency=XAF&item_ref=order-' || g || '&payment_ref=' || md5('r' || g)
        || '&user=user' || g || '&first_name=Jane&last_name=Doe&email=customer' || g
        || '%40example.com&operator=CM_MTNMOBILEMONEY&country_name=Cameroon&country_iso=CM'
        || '&operator_transaction_id=' || substr(md5('o' || g), 1, 20)
        || '&created_at=' || to_char(created, 'YYYY-MM-DD+HH24:MI:SS')
        || '&sign=' || md5('sig' || g)
    END,
    CASE WHEN kind = 0 THEN 1 WHEN reason = 0 THEN 0 WHEN reason = 1 THEN 0
         WHEN reason = 2 THEN 1 + g % 3 ELSE 1 END,
    0,
    CASE WHEN kind <> 0 AND reason = 0 THEN NULL ELSE created + interval '1 second' END,
    CASE WHEN kind = 0 OR reason IN (2, 3) THEN created + interval '2 seconds' END,
    CASE WHEN kind = 0 THEN created + interval '3 seconds' END,
    CASE WHEN kind <> 0 AND reason = 2 AND g % 2 = 0 THEN created + interval '10 minutes' END,
    CASE WHEN kind <> 0 AND reason = 2
         THEN 'RuntimeError: upstream timeout (attempt ' || (1 + g % 3) || ')' END,
    created,
    CASE WHEN kind = 0 THEN created + interval '3 seconds'
         WHEN reason = 0 THEN created
         WHEN reason = 1 THEN created + interval '1 second'
         ELSE created + interval '2 seconds' END
FROM (
    SELECT g, kind, CASE WHEN kind = 0 THEN (p % 2)::int ELSE ((p / 4) % 2)::int END AS prov,
           (p % 4)::int AS reason,
           CASE WHEN kind = 2
                THEN :t0 - make_interval(secs => 8 * 86400 + (:n - g)::float8 * 20 * 86400 / :n)
                ELSE :t0 - make_interval(secs => 3600 + (:n - g)::float8 * 561600 / :n) END
               AS created
    FROM (
        SELECT g, p, CASE WHEN p < :stuck THEN 1 WHEN p < :stuck + :expired THEN 2 ELSE 0 END
                   AS kind
        FROM (SELECT g, ((g - 1)::bigint * :prime) % :n AS p
              FROM generate_series(1, :n) AS g) AS perm
    ) AS kinds
) AS rows
ORDER BY g
"""

log = logging.getLogger("sweep_benchmark")


# --- configuration and results -------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    events: int
    stuck: int
    expired: int
    sample: int
    repeat: int
    batch_size: int
    batch_sizes: tuple[int, ...]
    empty_runs: int
    postgres_url: str
    json_path: str | None
    seed: int


@dataclass
class PhaseTimes:
    """One (b) run: wall seconds of each sweep phase and what the claim did."""

    scan: float
    claim: float
    dispatch: float
    finish: float
    scanned: int
    claimed: int
    skipped: int
    expired: int
    db: dict[str, dict[str, float]] = field(default_factory=dict)
    # Each claim UPDATE in order: (reason, ids in the batch, seconds inside cursor.execute).
    batches: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def b(self) -> float:
        return self.scan + self.claim

    @property
    def whole(self) -> float:
        return self.scan + self.claim + self.dispatch + self.finish


@dataclass
class SeedLoop:
    sample: int
    seconds: float
    won: int
    per_row_ms: float
    first_half_ms: float
    second_half_ms: float
    extrapolated: float


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    copy_seconds: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_rows: list[int] = field(default_factory=list)
    sweeps: list[PhaseTimes] = field(default_factory=list)
    run_sweep_whole: float | None = None
    run_sweep_claimed: int | None = None
    prepared: list[dict[str, Any]] = field(default_factory=list)
    seed_loop: SeedLoop | None = None
    batch_claim: dict[int, PhaseTimes] = field(default_factory=dict)
    empty: list[float] = field(default_factory=list)
    empty_expired: int | None = None
    explain: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in {"sweeps", "batch_claim"}}
        out["sweeps"] = [asdict(s) | {"b": s.b, "whole": s.whole} for s in self.sweeps]
        out["batch_claim"] = {str(k): asdict(v) for k, v in self.batch_claim.items()}
        out["summary"] = summary(self)
        return out


def summary(r: Results) -> dict[str, Any]:
    """The headline figures and the targets, computed one way for the table and the JSON."""
    a = median(r.floor)
    b = median([s.b for s in r.sweeps])
    per_rep = [s.b / f for s, f in zip(r.sweeps, r.floor, strict=False)]
    c = r.seed_loop.extrapolated if r.seed_loop else math.nan
    d = median(r.empty)
    return {
        "a_floor_s": a,
        "b_scan_s": median([s.scan for s in r.sweeps]),
        "b_claim_s": median([s.claim for s in r.sweeps]),
        "b_s": b,
        "whole_sweep_s": median([s.whole for s in r.sweeps]),
        "b_over_a_per_rep": per_rep,
        "b_over_a_median_of_ratios": median(per_rep),
        "b_over_a_ratio_of_medians": b / a,
        "c_s": c,
        "c_over_b": c / b,
        "d_ms": d * 1000,
        "target_b_over_a_met": median(per_rep) <= 1.3,
        "target_c_over_b_met": c / b >= 40,
        "target_d_met": d * 1000 < 50,
    }


# --- databases -----------------------------------------------------------------------------------


@contextmanager
def copy_of(dbs: harness.Databases, template: str, results: Results) -> Iterator[Engine]:
    """A fresh copy of the loaded fixture, warmed, checkpointed; dropped on exit."""
    start = time.perf_counter()
    name = dbs.create(template=template)
    results.copy_seconds.append(time.perf_counter() - start)
    engine = store.make_engine(dbs.url(name))
    try:
        warm(engine)
        dbs.checkpoint()
        yield engine
    finally:
        engine.dispose()
        dbs.drop(name)


def warm(engine: Engine) -> None:
    """The same cache preparation before every measurement: every relation of `webhook_events`
    read into the OS page cache (pg_prewarm 'read'; shared_buffers is smaller than the table), then
    the stuck rows touched once through the floor's WHERE (index pages and their heap pages). The
    pool's one connection is opened here, so no timing includes a connect."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT pg_prewarm(c.oid, 'read') FROM pg_class c, "
            "(SELECT 'webhook_events'::regclass::oid AS t) AS w "
            "WHERE c.oid = w.t "
            "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = w.t) "
            "OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = w.t)"
        )
        conn.execute(sa.text(COUNT_STUCK_SQL), window(utcnow())).scalar()


def window(now: dt.datetime) -> dict[str, dt.datetime]:
    """The sweep's thresholds for `now`, with SweepParams' defaults."""
    return {
        "now": now,
        "stuck_before": now - dt.timedelta(minutes=MINUTES),
        "stalled_before": now - dt.timedelta(minutes=STALLED_MINUTES),
        "created_after": now - dt.timedelta(days=MAX_AGE_DAYS),
    }


def pick_prime(n: int) -> int:
    p = 7919
    while math.gcd(p, n) != 1:
        p += 2
    return p


def load_fixture(dbs: harness.Databases, cfg: Config, results: Results) -> str:
    """Create, migrate and fill the template database; returns its name."""
    name = dbs.create(dbs.prefix)
    engine = store.make_engine(dbs.url(name))
    try:
        start = time.perf_counter()
        migrations.upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.execute(
                sa.text(FIXTURE_SQL),
                {
                    "t0": utcnow(),
                    "n": cfg.events,
                    "stuck": cfg.stuck,
                    "expired": cfg.expired,
                    "prime": pick_prime(cfg.events),
                },
            )
        results.load["insert_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (FREEZE, ANALYZE)")
            facts = conn.exec_driver_sql(
                "SELECT count(*), avg(length(payload)), "
                "pg_relation_size('webhook_events'), pg_indexes_size('webhook_events') "
                "FROM webhook_events"
            ).one()
            stuck_now = conn.execute(sa.text(COUNT_STUCK_SQL), window(utcnow())).scalar()
        results.load["vacuum_analyze_s"] = time.perf_counter() - start
        results.load["rows"] = int(facts[0])
        results.load["avg_payload_bytes"] = float(facts[1])
        results.load["heap_mb"] = facts[2] / 2**20
        results.load["indexes_mb"] = facts[3] / 2**20
        if facts[0] != cfg.events or stuck_now != cfg.stuck:
            raise RuntimeError(
                f"fixture has {facts[0]} rows, {stuck_now} stuck: expected "
                f"{cfg.events} and {cfg.stuck}"
            )
    finally:
        engine.dispose()
    dbs.checkpoint()
    return name


# --- statement timing ----------------------------------------------------------------------------


class StatementLog:
    """Time spent inside `cursor.execute` (server work + round trip + result transfer), per phase
    and statement kind; optionally keeps the statements for EXPLAIN."""

    def __init__(self, engine: Engine) -> None:
        self.phase = "setup"
        self.db: dict[str, dict[str, float]] = {}
        self.captured: list[tuple[str, str, Any]] = []
        self.batches: list[tuple[str, int, float]] = []
        self.capture = False
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    @staticmethod
    def kind(statement: str) -> str:
        words = statement.split()
        if words[0] == "WITH" and "UPDATE webhook_events" in statement:
            return "update webhook_events"  # the claim: its locking CTE, then the UPDATE
        if words[0] == "UPDATE":
            return f"update {words[1]}"
        if words[0] == "INSERT":
            return f"insert {words[2]}"
        if words[0] == "SELECT" and "count(" in statement:
            return "select count"
        return words[0].lower()

    def _before(self, conn: Connection, *_args: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(
        self, conn: Connection, _cursor: Any, statement: str, parameters: Any, *_args: Any
    ) -> None:
        elapsed = time.perf_counter() - conn.info.pop("bench_t0")
        kind = self.kind(statement)
        stats = self.db.setdefault(f"{self.phase}: {kind}", {"n": 0, "s": 0.0, "max_s": 0.0})
        stats["n"] += 1
        stats["s"] += elapsed
        stats["max_s"] = max(stats["max_s"], elapsed)
        if self.phase == "claim" and kind == "update webhook_events":
            # The ids: one array parameter (`id = ANY(...)`), or one parameter per id.
            ids = sum(
                len(v) if isinstance(v, list | tuple) else k.startswith("id_")
                for k, v in parameters.items()
            )
            self.batches.append((claim_reason(statement), ids, elapsed))
        if self.capture:
            self.captured.append((self.phase, statement, parameters))


# --- the measurements ----------------------------------------------------------------------------


def measure_floor(engine: Engine) -> tuple[float, int]:
    """(a): the one-statement UPDATE, committed (the sweep commits too)."""
    with engine.connect() as conn:
        params = window(utcnow())
        start = time.perf_counter()
        rows = conn.execute(sa.text(FLOOR_SQL), params).rowcount
        conn.commit()
        return time.perf_counter() - start, rows


def measure_sweep(
    engine: Engine, batch_size: int, *, capture: bool = False, claim_only: bool = False
) -> tuple[PhaseTimes, StatementLog]:
    """(b): the sweep's phases, timed one by one, chained exactly as `run_sweep` chains them."""
    stmts = StatementLog(engine)
    stmts.capture = capture
    params = sweep.SweepParams(batch_size=batch_size)
    stmts.phase = "scan"
    t0 = time.perf_counter()
    scan = sweep.begin_sweep(engine, params, trigger=SweepTrigger.CLI)
    stmts.phase = "claim"
    t1 = time.perf_counter()
    claim = sweep.claim_candidates(engine, scan)
    t2 = time.perf_counter()
    stmts.capture = False
    dispatch_s = finish_s = 0.0
    if not claim_only:
        stmts.phase = "dispatch"
        dispatch = sweep.dispatch_claimed(engine, scan, claim, NullDispatcher())
        t3 = time.perf_counter()
        stmts.phase = "finish"
        sweep.finish_sweep(engine, scan, claim, dispatch)
        dispatch_s, finish_s = t3 - t2, time.perf_counter() - t3
    times = PhaseTimes(
        scan=t1 - t0,
        claim=t2 - t1,
        dispatch=dispatch_s,
        finish=finish_s,
        scanned=len(scan.candidates),
        claimed=len(claim.claimed),
        skipped=len(claim.skipped),
        expired=sum(scan.expired.values()),
        db=stmts.db,
        batches=stmts.batches,
    )
    return times, stmts


def prepared_statements(engine: Engine) -> list[dict[str, Any]]:
    """Statements psycopg prepared on the sweep's pooled connection, with PostgreSQL's count of
    generic and custom plans (a generic plan is re-used without looking at the parameters)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT left(regexp_replace(statement, '\\s+', ' ', 'g'), 90), generic_plans, "
            "custom_plans FROM pg_prepared_statements ORDER BY custom_plans + generic_plans DESC"
        ).all()
    return [{"statement": s, "generic_plans": g, "custom_plans": c} for s, g, c in rows]


def measure_seed_loop(engine: Engine, sample: int, rng: random.Random) -> SeedLoop:
    """(c): the seed's shape, one autocommit round trip per candidate; the candidates come from a
    dry-run scan (not timed), the sample is drawn at random and walked in id order."""
    scan = sweep.begin_sweep(engine, sweep.SweepParams(), dry_run=True)
    chosen = sorted(
        rng.sample(list(scan.candidates), min(sample, len(scan.candidates))),
        key=lambda c: c.event.id,
    )
    per_row: list[float] = []
    won = 0
    E = store.webhook_events.c
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        start = time.perf_counter()
        for c in chosen:
            row_start = time.perf_counter()
            now = utcnow()
            result = conn.execute(
                sa.update(store.webhook_events)
                .where(E.id == c.event.id, store.STUCK_REASONS[c.reason].condition(scan.cutoffs))
                .values(dispatched_at=now, updated_at=now)
            )
            won += result.rowcount
            per_row.append(time.perf_counter() - row_start)
        seconds = time.perf_counter() - start
    half = len(per_row) // 2
    stuck = len(scan.candidates)
    return SeedLoop(
        sample=len(chosen),
        seconds=seconds,
        won=won,
        per_row_ms=seconds / len(chosen) * 1000,
        first_half_ms=statistics.fmean(per_row[:half]) * 1000,
        second_half_ms=statistics.fmean(per_row[half:]) * 1000,
        extrapolated=seconds / len(chosen) * stuck,
    )


def measure_empty(engine: Engine, runs: int) -> tuple[list[float], int]:
    """(d): settle every row inside the window as `processed` (expired rows stay: a real table
    keeps them, and the sweep counts them each time), VACUUM ANALYZE, then time `run_sweep`."""
    w = window(utcnow())
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE webhook_events SET status = 'processed', processed_at = :now, "
                "processing_started_at = coalesce(processing_started_at, :now), "
                "next_attempt_at = NULL, last_error = NULL, updated_at = :now "
                "WHERE status <> 'processed' AND created_at >= :created_after"
            ),
            w,
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    params = sweep.SweepParams()
    sweep.run_sweep(engine, params, NullDispatcher())  # warm-up, not counted
    times: list[float] = []
    expired = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = sweep.run_sweep(engine, params, NullDispatcher())
        times.append(time.perf_counter() - start)
        if result.total.scanned:
            raise RuntimeError(f"empty sweep found {result.total.scanned} candidates")
        expired = result.total.expired
    return times, expired


def explain(conn: Connection, statement: str, parameters: Any) -> str:
    rows = conn.exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS, SETTINGS) " + statement, parameters
    ).scalars()
    return "\n".join(rows)


def measure_explains(engine: Engine, captured: list[tuple[str, str, Any]]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the first (b) run sent: the four scans, the
    expired count, the first claim batch of each reason (rolled back), and the floor (rolled
    back). Runs on a fresh copy, so the rows are stuck again; the sweep's own bound parameters are
    re-used (their timestamps are a few minutes old: same rows match)."""
    out: dict[str, str] = {}
    scans = [
        (s, p) for phase, s, p in captured if phase == "scan" and s.lstrip().startswith("SELECT")
    ]
    claims = [
        (s, p)
        for phase, s, p in captured
        if phase == "claim" and StatementLog.kind(s) == "update webhook_events"
    ]
    with engine.connect() as conn:
        # The scans come in SweepReason order, then count_expired; the list of the oldest expired
        # rows that may follow (a LIMIT over what count_expired read) is left out.
        reasons = iter(REASON_ORDER)
        for statement, parameters in scans:
            if "count(" in statement:
                label = "count_expired"
            elif (reason := next(reasons, None)) is not None:
                label = f"scan {reason}"
            else:
                continue
            out[label] = explain(conn, statement, parameters)
        conn.rollback()
        seen: set[str] = set()
        for statement, parameters in claims:
            reason = claim_reason(statement)
            if reason in seen:
                continue
            seen.add(reason)
            out[f"first claim batch, {reason} ({len(parameters)} parameters)"] = explain(
                conn, statement, parameters
            )
            conn.rollback()
        out["floor (a)"] = explain_text(conn, FLOOR_SQL, window(utcnow()))
        conn.rollback()
    return out


REASON_ORDER = [r.value for r in SweepReason]  # begin_sweep scans in SweepReason order


def claim_reason(statement: str) -> str:
    """Which reason a captured claim UPDATE repeats, read off its WHERE clause."""
    if "next_attempt_at" in statement:
        return SweepReason.FAILED_OLD.value
    if "processing_started_at <" in statement:
        return SweepReason.PROCESSING_STALLED.value
    if "dispatched_at IS NULL" in statement:
        return SweepReason.DISPATCHED_AT_NULL.value
    return SweepReason.DISPATCH_LOST.value


def explain_text(conn: Connection, sql: str, params: dict[str, Any]) -> str:
    rows = conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS, SETTINGS) " + sql), params).scalars()
    return "\n".join(rows)


# --- reporting -----------------------------------------------------------------------------------


def plan_summary(plan: str, width: int = 150) -> str:
    """The plan's node lines and totals, long lines (2,000-value IN lists) cut."""
    keep: list[str] = []
    for line in plan.splitlines():
        text = line.strip()
        if (
            "->" in line
            or not line.startswith(" ")
            or text.startswith(
                (
                    "Index Cond",
                    "Filter",
                    "Rows Removed",
                    "Buffers",
                    "Recheck",
                    "Heap Blocks",
                    "Sort Method",
                    "JIT",
                    "Timing",
                    "Settings",
                    "Planning",
                    "Execution",
                    "Hash Cond",
                    "Join Filter",
                )
            )
        ):
            keep.append(line if len(line) <= width else line[: width - 3] + "...")
    return "\n".join(keep)


def render(r: Results, cfg: Config) -> str:
    s = summary(r)
    lines: list[str] = []
    add = lines.append
    add("")
    add(
        f"Sweep benchmark on PostgreSQL: {cfg.events:,} events, {cfg.stuck:,} stuck in the window "
        f"({cfg.stuck // 4:,} per reason, both providers), {cfg.expired:,} stuck and expired"
    )
    add(
        f"load {fmt_s(r.load['insert_s'])} + VACUUM (FREEZE, ANALYZE) "
        f"{fmt_s(r.load['vacuum_analyze_s'])}; heap {r.load['heap_mb']:.0f} MB, indexes "
        f"{r.load['indexes_mb']:.0f} MB, payload avg {r.load['avg_payload_bytes']:.0f} B; "
        f"template copy median {fmt_s(median(r.copy_seconds))}"
    )
    add("")
    reps = len(r.sweeps)
    head = f"{'measurement':<44}" + "".join(f"{'rep ' + str(i + 1):>11}" for i in range(reps))
    add(head + f"{'median':>11}")
    add("-" * len(head + " " * 11))

    def row(label: str, values: Sequence[float], med: float | None = None) -> None:
        med = median(values) if med is None else med
        add(f"{label:<44}" + "".join(f"{fmt_s(v):>11}" for v in values) + f"{fmt_s(med):>11}")

    row("(a) floor: one UPDATE, all reasons OR-ed", r.floor)
    row("(b) scan   begin_sweep", [x.scan for x in r.sweeps])
    row("(b) claim  claim_candidates", [x.claim for x in r.sweeps])
    row("(b) = scan + claim", [x.b for x in r.sweeps])
    row("    dispatch_claimed (NullDispatcher)", [x.dispatch for x in r.sweeps])
    row("    finish_sweep", [x.finish for x in r.sweeps])
    row("    whole sweep (sum of the 4 phases)", [x.whole for x in r.sweeps])
    ratios = s["b_over_a_per_rep"]
    add(
        f"{'(b)/(a)':<44}"
        + "".join(f"{v:>10.2f}x" for v in ratios)
        + f"{s['b_over_a_median_of_ratios']:>10.2f}x"
    )
    if r.run_sweep_whole is not None:
        add(
            f"{'run_sweep() itself, NullDispatcher (1 run)':<44}{fmt_s(r.run_sweep_whole):>11}"
            f"   ({r.run_sweep_claimed:,} dispatched)"
        )
    if r.seed_loop:
        sl = r.seed_loop
        add(
            f"{'(c) seed loop, sample':<44}{fmt_s(sl.seconds):>11}   ({sl.sample:,} rows, "
            f"{sl.per_row_ms:.3f} ms/row; halves {sl.first_half_ms:.3f} / "
            f"{sl.second_half_ms:.3f} ms)"
        )
        add(f"{'(c) extrapolated to all stuck rows':<44}{fmt_s(sl.extrapolated):>11}")
    if r.empty:
        add(
            f"{'(d) empty run_sweep, median of ' + str(len(r.empty)):<44}"
            f"{fmt_s(median(r.empty)):>11}   (min {fmt_s(min(r.empty))}, max "
            f"{fmt_s(max(r.empty))}, expired counted {r.empty_expired:,})"
        )
    add("")
    add("targets")

    add(
        f"  (b) <= 1.3 x (a): {s['b_over_a_median_of_ratios']:.2f}x (median of per-rep ratios; "
        f"ratio of medians {s['b_over_a_ratio_of_medians']:.2f}x)  "
        f"{verdict(s['target_b_over_a_met'])}"
    )
    add(f"  (c)/(b) >= 40:    {s['c_over_b']:.1f}  {verdict(s['target_c_over_b_met'])}")
    add(f"  (d) < 50 ms:      {s['d_ms']:.1f} ms  {verdict(s['target_d_met'])}")
    if r.batch_claim:
        add("")
        add("claim phase by batch size (one run each, fresh copy each)")
        for size, t in sorted(r.batch_claim.items()):
            add(
                f"  batch {size:>6}: scan {fmt_s(t.scan):>9}  claim {fmt_s(t.claim):>9}  "
                f"scan+claim {fmt_s(t.b):>9}"
            )
    if r.sweeps:
        add("")
        add("time inside cursor.execute, rep 1 (server + round trip), by phase and statement")
        for key, st in sorted(r.sweeps[0].db.items()):
            add(
                f"  {key:<44} n={int(st['n']):>5}  total {fmt_s(st['s']):>9}  "
                f"max {fmt_s(st['max_s']):>9}"
            )
    if r.sweeps and r.sweeps[0].batches:
        add("")
        add("claim UPDATE per batch, rep 1, in execution order: n, total, first, median, last, max")
        by_reason: dict[str, list[float]] = {}
        for reason, _n, sec in r.sweeps[0].batches:
            by_reason.setdefault(reason, []).append(sec)
        for reason, secs in by_reason.items():
            add(
                f"  {reason:<20} n={len(secs):>3}  total {fmt_s(sum(secs)):>9}  first "
                f"{fmt_s(secs[0]):>9}  median {fmt_s(median(secs)):>9}  last {fmt_s(secs[-1]):>9}"
                f"  max {fmt_s(max(secs)):>9}"
            )
    if r.prepared:
        add("")
        add("prepared statements on the sweep's connection (rep 1): generic / custom plans")
        for p in r.prepared[:6]:
            add(f"  {p['generic_plans']:>4} / {p['custom_plans']:<4} {p['statement']}")
    for label, plan in r.explain.items():
        add("")
        add(f"EXPLAIN (ANALYZE, BUFFERS): {label}")
        add(plan_summary(plan))
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="rows (default 1,000,000)")
    parser.add_argument(
        "--stuck",
        type=int,
        default=None,
        help="stuck rows in the window (default 100,000; a multiple of 4)",
    )
    parser.add_argument(
        "--expired",
        type=int,
        default=None,
        help="stuck rows older than the window (default 3%% of --stuck)",
    )
    parser.add_argument("--sample", type=int, default=None, help="(c) sample (default 2,000)")
    parser.add_argument("--repeat", type=int, default=3, help="(a)/(b) alternations")
    parser.add_argument("--batch-size", type=int, default=2000, help="batch size of (b)")
    parser.add_argument(
        "--batch-sizes",
        default="1000,2000,5000,10000",
        help="claim phase per batch size, comma-separated ('' to skip)",
    )
    parser.add_argument("--empty-runs", type=int, default=20, help="(d) runs")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PAYMENTS_BENCH_POSTGRES_URL", harness.DEFAULT_POSTGRES_URL),
        help="maintenance URL; the benchmark creates and drops its own databases",
    )
    parser.add_argument("--json", dest="json_path", help="write all results as JSON ('-': stdout)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 20,000 events, 2,000 stuck, sample 200, 5 empty runs",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of the (c) sample")
    ns = parser.parse_args(argv)
    events = ns.events or (20_000 if ns.quick else 1_000_000)
    stuck = ns.stuck or (2_000 if ns.quick else 100_000)
    expired = ns.expired if ns.expired is not None else max(4, stuck * 3 // 100 // 4 * 4)
    sample = ns.sample or (200 if ns.quick else 2_000)
    if stuck % 4 or stuck + expired > events or min(events, stuck, sample, ns.repeat) < 1:
        parser.error("need 1 <= stuck (multiple of 4), stuck + expired <= events, sample >= 1")
    sizes = tuple(int(x) for x in ns.batch_sizes.split(",") if x.strip())
    return Config(
        events=events,
        stuck=stuck,
        expired=expired,
        sample=sample,
        repeat=ns.repeat,
        batch_size=ns.batch_size,
        batch_sizes=sizes,
        empty_runs=5 if ns.quick and ns.empty_runs == 20 else ns.empty_runs,
        postgres_url=ns.postgres_url,
        json_path=ns.json_path,
        seed=ns.seed,
    )


def run(cfg: Config, dbs: harness.Databases) -> Results:
    r = Results()
    r.config = asdict(cfg)
    r.machine = {
        "nproc": os.cpu_count(),
        "ram_gb": harness.ram_gb(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "platform": platform.platform(),
        "postgres": dbs.server_facts(PG_SETTINGS),
    }
    progress(f"loading {cfg.events:,} events into {dbs.prefix}")
    template = load_fixture(dbs, cfg, r)
    progress(f"loaded in {r.load['insert_s']:.1f} s (+ vacuum {r.load['vacuum_analyze_s']:.1f} s)")
    captured: list[tuple[str, str, Any]] = []
    for rep in range(cfg.repeat):
        with copy_of(dbs, template, r) as engine:
            seconds, rows = measure_floor(engine)
        r.floor.append(seconds)
        r.floor_rows.append(rows)
        progress(f"rep {rep + 1}: (a) {seconds:.3f} s, {rows:,} rows")
        with copy_of(dbs, template, r) as engine:
            times, stmts = measure_sweep(engine, cfg.batch_size, capture=rep == 0)
            if rep == 0:
                captured = stmts.captured
                r.prepared = prepared_statements(engine)
        r.sweeps.append(times)
        progress(
            f"rep {rep + 1}: (b) scan {times.scan:.3f} s + claim {times.claim:.3f} s, "
            f"claimed {times.claimed:,}"
        )
        if rows != cfg.stuck or times.claimed != cfg.stuck or times.skipped:
            raise RuntimeError(
                f"(a) updated {rows} rows, (b) claimed {times.claimed} and "
                f"skipped {times.skipped}: expected {cfg.stuck} each, 0 skipped"
            )
    with copy_of(dbs, template, r) as engine:
        progress("EXPLAIN and (c) seed loop")
        r.explain = measure_explains(engine, captured)
        r.seed_loop = measure_seed_loop(engine, cfg.sample, random.Random(cfg.seed))
        if r.seed_loop.won != r.seed_loop.sample:
            raise RuntimeError(f"(c) claimed {r.seed_loop.won} of {r.seed_loop.sample} rows")
    for size in cfg.batch_sizes:
        with copy_of(dbs, template, r) as engine:
            r.batch_claim[size], _ = measure_sweep(engine, size, claim_only=True)
        progress(f"batch {size}: claim {r.batch_claim[size].claim:.3f} s")
    with copy_of(dbs, template, r) as engine:
        start = time.perf_counter()
        whole = sweep.run_sweep(
            engine, sweep.SweepParams(batch_size=cfg.batch_size), NullDispatcher()
        )
        r.run_sweep_whole = time.perf_counter() - start
        r.run_sweep_claimed = whole.total.dispatched
        progress(f"run_sweep {r.run_sweep_whole:.3f} s; (d) empty sweeps")
        r.empty, r.empty_expired = measure_empty(engine, cfg.empty_runs)
    return r


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    # The sweep logs one INFO line per dispatched event and a WARNING per provider with expired
    # rows; neither is what is measured here.
    logging.basicConfig(level=logging.ERROR)
    harness.interrupt_on_signals()
    dbs = harness.Databases(cfg.postgres_url)
    started = time.perf_counter()
    try:
        results = run(cfg, dbs)
    except KeyboardInterrupt:
        print("interrupted: dropping the benchmark databases", file=sys.stderr)
        return 130
    finally:
        dbs.drop_all()
    results.load["total_run_s"] = time.perf_counter() - started
    print(render(results, cfg))
    print(f"\ntotal {results.load['total_run_s']:.0f} s")
    if cfg.json_path:
        text = json.dumps(results.as_json(), indent=2, default=str)
        if cfg.json_path == "-":
            print(text)
        else:
            Path(cfg.json_path).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the HTTP receiver: signed Stripe deliveries against `payments-pipeline serve`.

What runs (all on 127.0.0.1, nothing leaves the machine):
- a database of its own, `pp_bench_receiver_<random>`, created on the PostgreSQL server given by
  `--postgres-url`, migrated, and dropped at the end (also on error or Ctrl-C);
- `payments-pipeline serve --workers W --dispatch D` as a subprocess on a free port, with the
  production defaults for everything else (INFO logs and the access log, to a file);
- the load generator, `wrk` (Debian package `wrk`, C, epoll) with `benchmarks/receiver_wrk.lua`:
  it sends pre-signed deliveries, each a new Stripe event (unique `evt_` id), signed by this script
  just before the run (a signature stays valid for Stripe's 300 s tolerance, so the run is capped
  at 240 s). wrk is closed-loop: `--connections` requests are in flight at any time.

Bounded twice: wrk stops after `--requests` responses or `--duration` seconds, whichever first.
After the run the database is checked: one row per accepted delivery, none lost or doubled. With
`--dispatch inline` the script also waits (bounded) for processing to catch up and reports how long
the backlog took; with `--dispatch none` processing is excluded from the measurement (events are
claimed and left `received`), which measures the door alone.

    .venv/bin/python benchmarks/receiver_benchmark.py                       # 2 workers, inline
    .venv/bin/python benchmarks/receiver_benchmark.py --workers 1 --dispatch none --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from payments_pipeline import migrations, store
from payments_pipeline.providers.stripe import sign_payload

HERE = Path(__file__).resolve().parent
LUA = HERE / "receiver_wrk.lua"
SECRET = "whsec_benchmark_" + secrets.token_hex(8)
MAX_DURATION = 240  # seconds; the signatures must stay inside Stripe's 300 s tolerance
TARGET_RPS = 1500
TARGET_P99_MS = 25.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def own_database(admin_url: str) -> Iterator[str]:
    """Create, migrate, yield the URL of, and finally drop a database of our own."""
    admin_url = store.normalize_url(admin_url)
    name = f"pp_bench_receiver_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        engine = store.make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def write_deliveries(path: Path, count: int, run: str) -> None:
    """`count` signed deliveries, one per line: `<Stripe-Signature>\\t<body>` (compact JSON)."""
    now = int(time.time())
    with path.open("w") as out:
        for i in range(count):
            body = json.dumps(
                {
                    "id": f"evt_{run}_{i}",
                    "object": "event",
                    "type": "payment_intent.succeeded",
                    "created": now,
                    "data": {
                        "object": {
                            "id": f"pi_{run}_{i}",
                            "object": "payment_intent",
                            "amount": 1000 + i % 500,
                            "currency": "eur",
                        }
                    },
                },
                separators=(",", ":"),
            )
            out.write(f"{sign_payload(body, SECRET, now)}\t{body}\n")


@contextmanager
def server(args: argparse.Namespace, url: str, port: int, log: Path) -> Iterator[tuple[str, int]]:
    """`payments-pipeline serve` as a subprocess until the block ends (SIGINT, then SIGKILL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_"))}
    env.update(PAYMENTS_DATABASE_URL=url, STRIPE_WEBHOOK_SECRET=SECRET)
    if args.gate_threads is not None:
        env["PAYMENTS_GATE_THREADS"] = str(args.gate_threads)
    command = [
        sys.executable, "-m", "payments_pipeline.cli", "--log-level", args.log_level, "serve",
        "--port", str(port), "--workers", str(args.workers), "--dispatch", args.dispatch,
    ]  # fmt: skip
    if not args.access_log:
        command.append("--no-access-log")
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"serve exited early; see {log}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"serve did not become healthy; see {log}")
                time.sleep(0.2)
            yield base, process.pid
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_wrk(
    base: str, deliveries: Path, requests: int, duration: int, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency",
        "--timeout", "10s", "-s", str(LUA), f"{base}/webhooks/stripe", "--",
        str(deliveries), str(requests), str(args.threads),
    ]  # fmt: skip
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["wrk_command"] = " ".join(command)
    result["wrk_cpu_seconds"] = round(
        wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime, 2
    )
    return result


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _processes(match: str | int) -> list[int]:
    """Pids whose command line contains `match` (our database's backends), or, for a pid, that
    process and its children (serve and its spawned workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if isinstance(match, int):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if int(entry.name) == match or parent == match:
                    pids.append(int(entry.name))
            elif match in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class CpuMeter:
    """CPU seconds spent by the server processes and by PostgreSQL's backends for our database
    between `start` and `stop`: what each request costs, and where the two cores went."""

    def __init__(self, server_pid: int, database: str) -> None:
        self.matches: dict[str, str | int] = {"server": server_pid, "postgres": database}
        self.before: dict[str, dict[int, float]] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: _cpu_seconds(pid) for pid in _processes(match)}
            for name, match in self.matches.items()
        }

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        return {
            name: round(
                sum(t - self.before[name].get(pid, 0.0) for pid, t in after[name].items()), 2
            )
            for name in self.matches
        }


def count_by_status(url: str) -> dict[str, int]:
    engine = store.make_engine(url)
    try:
        with engine.connect() as conn:
            counts = store.count_by_provider_status(conn)
    finally:
        engine.dispose()
    return {key.status.value: n for key, n in counts.items()}


def wait_processed(url: str, expected: int, limit: float) -> tuple[float | None, dict[str, int]]:
    """Seconds until `expected` rows are processed (None if `limit` ran out first)."""
    start = time.monotonic()
    while True:
        counts = count_by_status(url)
        if counts.get("processed", 0) >= expected:
            return time.monotonic() - start, counts
        if time.monotonic() - start > limit:
            return None, counts
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=2, help="serve --workers")
    parser.add_argument("--dispatch", choices=["inline", "none"], default="inline")
    parser.add_argument(
        "--gate-threads", type=int, default=None, help="PAYMENTS_GATE_THREADS (default: its own)"
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (in flight)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--requests", type=int, default=45_000, help="stop after this many")
    parser.add_argument("--duration", type=int, default=30, help="stop after this many seconds")
    parser.add_argument("--warmup", type=int, default=3_000, help="requests before measuring")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if not 1 <= args.duration <= MAX_DURATION:
        raise SystemExit(f"--duration must be 1-{MAX_DURATION} s (signatures expire at 300 s)")
    load_before = os.getloadavg()
    run = secrets.token_hex(4)
    with (
        tempfile.TemporaryDirectory(prefix="receiver-bench-") as tmp,
        own_database(args.postgres_url) as url,
    ):
        work = Path(tmp)
        warm, main_file = work / "warmup.tsv", work / "deliveries.tsv"
        with server(args, url, _free_port(), work / "serve.log") as (base, pid):
            write_deliveries(warm, args.warmup, f"{run}w")
            run_wrk(base, warm, args.warmup, 30, args)
            if args.dispatch == "inline":
                wait_processed(url, args.warmup, 120)
            write_deliveries(main_file, args.requests, run)
            meter = CpuMeter(pid, f" {sa.make_url(url).database} ")
            meter.start()
            result = run_wrk(base, main_file, args.requests, args.duration, args)
            cpu = meter.stop()
            drain: float | None = None
            if args.dispatch == "inline":
                drain, counts = wait_processed(url, args.warmup + result["requests"], 180)
                counts = count_by_status(url)  # the in-flight tail too
            else:
                counts = count_by_status(url)
        log_tail = (work / "serve.log").read_text().splitlines()[-5:]
    seconds = result["duration_us"] / 1e6
    rows = sum(counts.values())
    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "server": {
            "workers": args.workers,
            "dispatch": args.dispatch,
            "gate_threads": args.gate_threads or "default",
            "log_level": args.log_level,
            "access_log": args.access_log,
        },
        "load_generator": f"wrk -t{args.threads} -c{args.connections} (closed loop)",
        "requests": result["requests"],
        "seconds": round(seconds, 2),
        "requests_per_second": round(result["requests"] / seconds, 1),
        "latency_ms": {
            k: round(result[f"{k}_us"] / 1000, 2) for k in ("p50", "p90", "p99", "p999", "max")
        },
        "non_200": result["non_200"],
        "socket_errors": {k: result[k] for k in ("connect_errors", "read_errors", "timeouts")},
        "rows": rows,
        # wrk counts the responses it read; the requests still in flight when it stopped (at most
        # one per connection, per run) were answered and recorded too.
        "rows_expected": args.warmup + result["requests"],
        "rows_expected_max": args.warmup + result["requests"] + 2 * args.connections,
        "statuses": counts,
        "processing_backlog_seconds": None if drain is None else round(drain, 1),
        # CPU during the measured run, per request: what the two cores were spent on. With
        # --dispatch inline, processing that lags behind the run is partly outside this window.
        "cpu_ms_per_request": {
            "server": round(cpu["server"] * 1000 / result["requests"], 3),
            "postgres": round(cpu["postgres"] * 1000 / result["requests"], 3),
            "wrk": round(result["wrk_cpu_seconds"] * 1000 / result["requests"], 3),
        },
        "wrk_command": result["wrk_command"],
    }
    rps, p99 = summary["requests_per_second"], summary["latency_ms"]["p99"]
    print(json.dumps(summary, indent=2))
    print(
        f"\n{rps:.0f} requests/s (target {TARGET_RPS}), p99 {p99:.1f} ms (target "
        f"< {TARGET_P99_MS:.0f}); workers={args.workers} dispatch={args.dispatch} "
        f"c={args.connections}; rows {rows}/{summary['rows_expected']}"
    )
    if summary["non_200"] or not (summary["rows_expected"] <= rows <= summary["rows_expected_max"]):
        print("WARNING: non-200 answers or a row count mismatch; serve log tail:", *log_tail)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

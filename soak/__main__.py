"""`python -m soak`: run the reliability soak and print its report; exit 1 on any violation.

    .venv/bin/python -m soak --backend postgres --duration 600
    .venv/bin/python -m soak --backend mysql --duration 180 --json
    .venv/bin/python -m soak --backend postgres --dispatch celery --duration 180

Exit codes: 0 no violation, 1 violations (listed in the report), 2 the run could not complete
(the receiver died, a setup step failed), 130 interrupted. The database is dropped and every child
process stopped in all cases.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .config import BACKENDS, DEFAULT_BROKER_URL, DEFAULT_SERVER_URLS, DISPATCHES, SoakConfig
from .orchestrator import run_soak
from .report import render


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def parse_args(argv: Sequence[str] | None) -> tuple[SoakConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default="postgres")
    parser.add_argument("--server-url", help="admin URL of the server (default: the local one)")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument(
        "--dispatch",
        choices=DISPATCHES,
        default="table",
        help="table: the soak's table workers; celery: Celery workers on a private queue",
    )
    parser.add_argument(
        "--broker-url", default=DEFAULT_BROKER_URL, help="RabbitMQ, for --dispatch celery"
    )
    parser.add_argument(
        "--celery-concurrency", type=int, default=2, help="pool processes per Celery worker"
    )
    parser.add_argument("--rate", type=float, default=40, help="new events per second")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (table or Celery)")
    parser.add_argument("--serve-workers", type=int, default=2, help="receiver processes")
    parser.add_argument("--failure-rate", type=float, default=0.1, help="injected, per attempt")
    parser.add_argument("--handler-delay-ms", type=float, default=20)
    parser.add_argument("--max-attempts", type=int, default=10, help="PAYMENTS_MAX_ATTEMPTS")
    parser.add_argument("--kill-every", type=_pair, default=(2.0, 8.0), metavar="MIN,MAX")
    parser.add_argument("--cut-every", type=_pair, default=(3.0, 10.0), metavar="MIN,MAX")
    parser.add_argument(
        "--broker-cut-every", type=_pair, default=(15.0, 30.0), metavar="MIN,MAX",
        help="celery: cut every broker connection at once (through the soak's TCP proxy)",
    )  # fmt: skip
    parser.add_argument(
        "--broker-down-every", type=_pair, default=(40.0, 80.0), metavar="MIN,MAX",
        help="celery: make the broker unreachable for --broker-down-for seconds",
    )  # fmt: skip
    parser.add_argument("--broker-down-for", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument(
        "--no-broker-faults", dest="broker_faults", action="store_false",
        help="celery: reach the broker directly, with no proxy and no broker faults",
    )  # fmt: skip
    parser.add_argument("--cut-fraction", type=float, default=0.5)
    parser.add_argument("--freeze-every", type=_pair, default=(60.0, 120.0), metavar="MIN,MAX")
    parser.add_argument("--freeze-for", type=_pair, default=(80.0, 100.0), metavar="MIN,MAX")
    parser.add_argument("--max-freezes", type=int, default=0, help="0: no limit")
    parser.add_argument("--sweep-every", type=_pair, default=(5.0, 10.0), metavar="MIN,MAX")
    parser.add_argument("--concurrent-sweep-chance", type=float, default=0.3)
    parser.add_argument("--chaos-stop-early", type=float, default=0, metavar="SECONDS")
    parser.add_argument(
        "--chaos-grace",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep chaos (and load) up to this much longer until every kind of fault happened",
    )
    parser.add_argument("--settle-timeout", type=float, default=300)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the logs here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    extra = {} if args.seed is None else {"seed": args.seed}
    config = SoakConfig(
        server_url=args.server_url or DEFAULT_SERVER_URLS[args.backend],
        duration=args.duration,
        dispatch=args.dispatch,
        broker_url=args.broker_url,
        celery_concurrency=args.celery_concurrency,
        rate=args.rate,
        workers=args.workers,
        serve_workers=args.serve_workers,
        failure_rate=args.failure_rate,
        handler_delay_ms=args.handler_delay_ms,
        max_attempts=args.max_attempts,
        kill_every=args.kill_every,
        cut_every=args.cut_every,
        cut_fraction=args.cut_fraction,
        broker_cut_every=args.broker_cut_every if args.broker_faults else None,
        broker_down_every=args.broker_down_every if args.broker_faults else None,
        broker_down_for=args.broker_down_for,
        freeze_every=args.freeze_every,
        freeze_for=args.freeze_for,
        max_freezes=args.max_freezes,
        sweep_every=args.sweep_every,
        concurrent_sweep_chance=args.concurrent_sweep_chance,
        chaos_stop_early=args.chaos_stop_early,
        chaos_grace=args.chaos_grace,
        settle_timeout=args.settle_timeout,
        log_dir=args.log_dir,
        **extra,
    )
    return config, args.json


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, as_json = parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for a kill as for Ctrl-C
    try:
        result = run_soak(config)
    except KeyboardInterrupt:
        print("soak interrupted: children stopped, database dropped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"error: the soak could not complete: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if as_json else render(result))
    return 1 if result["violation_count"] else 0


if __name__ == "__main__":
    sys.exit(main())

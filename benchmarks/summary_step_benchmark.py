"""Benchmark of the sweep run's summary step (`requeue_sweep_summary`) as a launched run pays it.

A run the daemon launches is a fresh process, so what the summary step imports on its own is paid
by every run; an in-process benchmark (warm imports) cannot see it. Each sample here is one
`payments-pipeline requeue-stuck-webhooks` (the job, run in its own process against a Dagster
home) on a SQLite database holding a few stuck events; the step's time is Dagster's own, read back
from the run's STEP_SUCCESS event. The same for a baseline commit, from a temporary git worktree
set up with `./dev setup`, alternating, so both see the same machine:

    .venv/bin/python benchmarks/summary_step_benchmark.py --baseline 3875322~1 --runs 7

Prints the median and the spread of every step's time per tree, and the summary step's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import harness

# Reads one Dagster home's runs and prints {step: [ms, ...]} (run with the tree's own Python).
_READ_STEPS = """
import json, sys
import dagster as dg
from dagster import DagsterEventType
out = {}
with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    for record in instance.get_run_records():
        run_id = record.dagster_run.run_id
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS):
            event = entry.dagster_event
            ms = event.event_specific_data.duration_ms
            out.setdefault(event.step_key, []).append(ms)
print(json.dumps(out))
"""

# Stuck events of two reasons, written with the tree's own store (run with the tree's Python).
_SEED = """
import datetime as dt, sys
from payments_pipeline import migrations, store
from payments_pipeline.models import utcnow
from payments_pipeline.providers.samples import stripe_event
engine = store.make_engine(sys.argv[1])
migrations.upgrade(engine)
now = utcnow()
rows = [
    {"provider": "stripe", "provider_event_id": f"evt_{sys.argv[2]}_{i}",
     "event_type": "payment_intent.succeeded",
     "payload": stripe_event(f"evt_{sys.argv[2]}_{i}", reference=f"pi_{sys.argv[2]}_{i}"),
     "dispatched_at": (now - dt.timedelta(minutes=30)) if i % 2 else None,
     "created_at": now - dt.timedelta(minutes=40)}
    for i in range(6)
]
store.in_transaction(engine, lambda conn: store.insert_events(conn, rows=rows))
engine.dispose()
"""


def tree_python(tree: Path) -> str:
    return str(tree / ".venv" / "bin" / "python")


def one_run(tree: Path, home: Path, url: str, n: int) -> None:
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "PAYMENTS_DATABASE_URL": url,
        "PAYMENTS_DISPATCH": "inline",
    }
    # cwd: `python -c` imports from the current directory first, so each tree reads its own code
    subprocess.run([tree_python(tree), "-c", _SEED, url, str(n)], check=True, env=env, cwd=tree)
    exe = tree / ".venv" / "bin" / "payments-pipeline"
    subprocess.run(
        [str(exe), "--log-level", "warning", "requeue-stuck-webhooks", "--json"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        cwd=tree,
    )


def prepare(tree: Path, folder: Path) -> tuple[Path, str]:
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(tree / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home, f"sqlite:///{folder / 'payments.sqlite3'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="commit to compare with (a temporary worktree)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    harness.interrupt_on_signals()
    trees: dict[str, Path] = {"this tree": harness.REPO}
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pp_summary_bench_"))
        if args.baseline:
            worktree, _commit = stack.enter_context(harness.baseline_tree(args.baseline))
            trees = {f"baseline {args.baseline}": worktree, **trees}
        homes = {}
        for name, tree in trees.items():
            folder = Path(tmp) / name.replace(" ", "_").replace("~", "_")
            homes[name] = prepare(tree, folder)
        for n in range(args.runs + 1):  # the first round warms the disk caches
            for name, tree in trees.items():
                one_run(tree, *homes[name], n)
        results = {}
        for name, tree in trees.items():
            out = subprocess.run(
                [tree_python(tree), "-c", _READ_STEPS, str(homes[name][0])],
                check=True,
                capture_output=True,
                text=True,
                cwd=tree,
            )
            steps: dict[str, list[float]] = defaultdict(list, json.loads(out.stdout))
            results[name] = {k: sorted(v)[1:] for k, v in steps.items()}  # drop the warm-up
    print(f"summary step benchmark: {args.runs} runs per tree, alternating")
    for name, steps in results.items():
        print(f"  {name}")
        for step, values in sorted(steps.items()):
            print(
                f"    {step:28} median {statistics.median(values):7.1f} ms  "
                f"(min {min(values):.1f}, max {max(values):.1f})"
            )
    if len(results) == 2:
        base, new = (
            statistics.median(results[n].get("requeue_sweep_summary", [0])) for n in results
        )
        print(f"  requeue_sweep_summary: {base:.1f} -> {new:.1f} ms ({new / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

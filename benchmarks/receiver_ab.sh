#!/usr/bin/env bash
# Side-by-side receiver benchmark: a baseline commit against the working tree, alternating, so
# both see the same (shared, noisy) machine. Each run is benchmarks/receiver_benchmark.py with the
# same arguments; the baseline's code is a temporary git worktree put first on PYTHONPATH (the
# server subprocesses inherit it), the script and the .venv are this tree's.
#
#   benchmarks/receiver_ab.sh BASELINE_COMMIT [CONNECTIONS=16] [ROUNDS=3] [DURATION=15]
#
# Prints one line per run and the median requests/s, p99 and server CPU per request of each side.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
baseline=${1:?usage: benchmarks/receiver_ab.sh BASELINE_COMMIT [CONNECTIONS] [ROUNDS] [DURATION]}
connections=${2:-16}
rounds=${3:-3}
duration=${4:-15}
work=$(mktemp -d /tmp/receiver-ab-XXXXXX)
trap 'git worktree remove --force "$work/baseline" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --quiet --detach "$work/baseline" "$baseline"

for round in $(seq "$rounds"); do
  for side in baseline current; do
    tree=$here
    [ "$side" = baseline ] && tree=$work/baseline
    (cd "$tree" && PYTHONPATH=$tree "$here/.venv/bin/python" "$here/benchmarks/receiver_benchmark.py" \
      --workers 2 --dispatch none --connections "$connections" --duration "$duration" \
      --json "$work/$side-$round.json" | tail -1 | sed "s/^/$side: /")
  done
done

"$here/.venv/bin/python" - "$work" <<'PY'
import json, statistics, sys
from pathlib import Path
work = Path(sys.argv[1])
medians = {}
for side in ("baseline", "current"):
    runs = [json.loads(p.read_text()) for p in sorted(work.glob(f"{side}-*.json"))]
    rps = statistics.median(r["requests_per_second"] for r in runs)
    p99 = statistics.median(r["latency_ms"]["p99"] for r in runs)
    cpu = statistics.median(r["cpu_ms_per_request"]["server"] for r in runs)
    medians[side] = rps
    print(f"{side:>8}: median {rps:,.0f} requests/s, p99 {p99:.1f} ms, server CPU {cpu:.3f} ms/request")
print(f"current / baseline throughput: {medians['current'] / medians['baseline']:.2f}x")
PY

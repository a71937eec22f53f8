"""The Celery task runs of a run, read back from the workers' logs (`soak.celery_app` writes a
start line before each run of the product's task and an end line after it returned).

A run killed mid-task (its pool process or its whole worker SIGKILLed) has a start line and no
end line. The start line is written before the task does anything, so every run that could have
started a processing attempt is counted; the end line is written only once the task returned, so
an outcome it names is what the product's `process_event` returned.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_START = re.compile(r"soak task start event=(\d+) redelivered=(True|False)")
_END = re.compile(r"soak task end event=(\d+) outcome=(\w+)")

# Outcomes of a run that started a processing attempt (`ProcessOutcome`); `not_claimed` started
# none; `error` (an exception escaped the task, e.g. a cut connection) may or may not have.
ATTEMPT_OUTCOMES = ("processed", "failed", "dead", "stale")


@dataclass
class TaskRuns:
    starts: Counter[int] = field(default_factory=Counter)  # per event id
    redelivered: Counter[int] = field(default_factory=Counter)
    outcomes: dict[int, Counter[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.starts.values())

    @property
    def redeliveries(self) -> int:
        return sum(self.redelivered.values())

    def outcome_totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.outcomes.values():
            total.update(counts)
        return total

    @property
    def unfinished(self) -> int:
        """Runs with a start line and no end line: killed mid-task (or at shutdown)."""
        return self.total - sum(self.outcome_totals().values())


def read(paths: Iterable[Path]) -> TaskRuns:
    runs = TaskRuns()
    for path in paths:
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if "soak task " not in line:
                    continue
                if found := _START.search(line):
                    event_id = int(found[1])
                    runs.starts[event_id] += 1
                    runs.redelivered[event_id] += found[2] == "True"
                elif found := _END.search(line):
                    runs.outcomes.setdefault(int(found[1]), Counter())[found[2]] += 1
    return runs

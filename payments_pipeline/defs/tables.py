"""`MetadataValue.table` builders, and the summary's two tables.

The UI renders a table's columns in its schema's order. The tables are built with plain Python:
a sweep's summary has one row per provider and per reason, and `import pandas` alone took ~1 s
of every run's summary step (a run the daemon launches is a fresh process; see
docs/PERFORMANCE.md, "Dagster run: summary step").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

from ..models import SweepOutcome, SweepReason
from ..status import DeadDetail
from ..sweep import SweepSummary

_OUTCOMES = (SweepOutcome.DISPATCHED, SweepOutcome.SKIPPED, SweepOutcome.DISPATCH_FAILED)
_COUNT_COLUMNS = tuple((c, "int") for c in ("scanned", "dispatched", "skipped", "expired"))


def table(records: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> Any:
    """A `MetadataValue.table` with an explicit schema (the UI renders columns in this order)."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord(dict(r)) for r in records],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
    )


def summary_tables(summary: SweepSummary) -> dict[str, Any]:
    """The seed's summary (per provider, then a total) and reason x outcome, every reason and
    outcome with zeros included, whatever this sweep met."""
    per_provider = [{"provider": p.value, **c.as_dict()} for p, c in summary.providers.items()]
    per_provider.append({"provider": "total", **summary.total.as_dict()})
    met = Counter((e.reason, e.outcome) for e in summary.events)
    why = [{"reason": r.value, **{o.value: met[r, o] for o in _OUTCOMES}} for r in SweepReason]
    return {
        "summary": table(per_provider, [("provider", "string"), *_COUNT_COLUMNS]),
        "reasons": table(why, [("reason", "string"), *((o.value, "int") for o in _OUTCOMES)]),
    }


_DEAD_COLUMNS = (
    ("id", "int"),
    ("provider", "string"),
    ("provider_event_id", "string"),
    ("event_type", "string"),
    ("attempts", "int"),
    ("cause", "string"),
    ("last_error", "string"),
    ("died_at", "string"),
)


def dead_table(dead: Sequence[DeadDetail]) -> dict[str, Any]:
    """`dead_events`: the first dead events by id, with the recorded cause and `last_error` (what
    to fix before a replay), only when there are some."""
    if not dead:
        return {}
    rows = [
        {
            "id": d.state.event.id,
            "provider": d.state.event.provider.value,
            "provider_event_id": d.state.event.provider_event_id,
            "event_type": d.state.event.event_type,
            "attempts": d.state.attempts_used,
            "cause": d.cause,
            "last_error": d.state.last_error or "",
            "died_at": f"{d.state.updated_at:%Y-%m-%d %H:%M}Z",
        }
        for d in dead
    ]
    return {"dead_events": table(rows, _DEAD_COLUMNS)}


def cell(text: str | None) -> str:
    """A Markdown table cell: a `|` or a line break would end it early."""
    return (text or "").replace("|", "\\|").replace("\n", " ")

"""`MetadataValue.table` builders, and the summary's two tables shaped with pandas.

The UI renders a table's columns in its schema's order; pandas' numpy integers are converted to
builtin `int`s, the only integers Dagster accepts in metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

from ..models import SweepOutcome, SweepReason
from ..sweep import SweepSummary

_OUTCOMES = (SweepOutcome.DISPATCHED, SweepOutcome.SKIPPED, SweepOutcome.DISPATCH_FAILED)


def table(records: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> Any:
    """A `MetadataValue.table` with an explicit schema (the UI renders columns in this order)."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord(dict(r)) for r in records],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
    )


def summary_tables(summary: SweepSummary) -> dict[str, Any]:
    """The seed's summary (per provider, then a total) and reason x outcome, shaped with pandas."""
    import pandas as pd  # lazily: only the summary step pays for it, not every definitions load

    per_provider = pd.DataFrame(
        [{"provider": p.value, **c.as_dict()} for p, c in summary.providers.items()]
        + [{"provider": "total", **summary.total.as_dict()}]
    )
    events = pd.DataFrame(
        [(e.reason.value, e.outcome.value) for e in summary.events], columns=["reason", "outcome"]
    )
    why = (  # every reason and outcome, zeros included, whatever this sweep met
        pd.crosstab(events["reason"], events["outcome"])
        .reindex(
            index=[r.value for r in SweepReason], columns=[o.value for o in _OUTCOMES], fill_value=0
        )
        .rename_axis(index="reason", columns=None)
        .reset_index()
    )
    count_columns = [(c, "int") for c in ("scanned", "dispatched", "skipped", "expired")]
    return {
        "summary": table(_plain(per_provider), [("provider", "string"), *count_columns]),
        "reasons": table(
            _plain(why), [("reason", "string"), *((o.value, "int") for o in _OUTCOMES)]
        ),
    }


def _plain(frame: Any) -> list[dict[str, Any]]:
    """DataFrame rows as builtin values: numpy integers are not metadata Dagster accepts."""
    return [
        {k: int(v) if hasattr(v, "item") else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]

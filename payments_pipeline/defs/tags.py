"""Run tags: the sweep's run-queue key, and how a run says who started it.

`sweep_runs.trigger` is read from the tags Dagster itself puts on a run (checked in the installed
1.13 source: `DagsterRun.tags_for_schedule` / `tags_for_sensor` add `dagster/schedule_name` /
`dagster/sensor_name` to every run a schedule or sensor requests). The CLI adds
`payments_pipeline/trigger=cli`; a script launching through the GraphQL API may add
`payments_pipeline/trigger=api`. A run with none of these was launched by a person: `ui`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..models import SweepTrigger

# Instance config limits runs carrying this tag key to one at a time (dagster_home/dagster.yaml).
SWEEP_TAG = "payments_pipeline/sweep"
SWEEP_TAG_VALUE = "requeue"
TRIGGER_TAG = "payments_pipeline/trigger"
# Instance config limits reconciliation runs (this tag, any value) to one at a time too.
RECONCILE_TAG = "payments_pipeline/reconcile"
SCHEDULE_NAME_TAG = "dagster/schedule_name"
SENSOR_NAME_TAG = "dagster/sensor_name"
# What a run found, added as it ends (`3 stuck, 2 dead, 1 expired`): the Runs list shows it.
FOUND_TAG = "payments_pipeline/found"


def trigger_from_tags(tags: Mapping[str, str]) -> SweepTrigger:
    """Who started this run, for the `sweep_runs` audit row."""
    if SCHEDULE_NAME_TAG in tags:
        return SweepTrigger.SCHEDULE
    if SENSOR_NAME_TAG in tags:
        return SweepTrigger.SENSOR
    try:
        return SweepTrigger(tags.get(TRIGGER_TAG, SweepTrigger.UI.value))
    except ValueError:  # a hand-written tag we do not know: still a person's launch
        return SweepTrigger.UI


def tag_found(context: Any, found: str) -> None:
    """Add `payments_pipeline/found` to the running run (an op's or an asset's `context`): a tag
    added to a run is shown in the Runs list, where a person looks first, unlike a step's
    metadata or a check's result."""
    context.instance.add_run_tags(context.run.run_id, {FOUND_TAG: found})

"""The job `dismiss_webhook_events`: settle dead or expired events by hand
(`payments_pipeline.dismiss`), from the launchpad or the CLI's `dismiss`.

Run config (both required: the launchpad shows them as what to fill in):

    ops:
      dismiss_events:
        config:
          event_ids: [812, 813]
          reason: "refunded by hand in the Stripe dashboard (ticket 4411)"

No event id, a blank reason, or one longer than the audit keeps, is refused before a run exists,
with one sentence (the op's config mapping). The run page says what was dismissed and what was
refused, and why.
"""

from typing import Any

import dagster as dg

from ..config import Settings
from ..dismiss import DismissError, DismissResult, clean_reason, dismiss_events
from ..replay import ByHand
from ..sweep import SweepParams
from .resources import PaymentsDatabase
from .sweep_config import refuse
from .tables import cell, table
from .tags import tag_found, trigger_from_tags

JOB_NAME = "dismiss_webhook_events"
OP_NAME = "dismiss_events"


_SCHEMA = {
    "event_ids": dg.Field([int], description="The dead or expired events to settle, by id."),
    "reason": dg.Field(dg.StringSource, description="Why they are settled (kept in the audit)."),
}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The op's config, refused with one sentence before any run exists (`refuse`) when it names
    no event or its reason is blank or too long; the reason as the audit keeps it."""
    if not config["event_ids"]:
        refuse("dismiss_webhook_events: nothing to dismiss: fill in event_ids", config)
    try:
        reason = clean_reason(config["reason"])
    except DismissError as exc:
        refuse(str(exc), config)
    return {"event_ids": list(config["event_ids"]), "reason": reason}


def dismiss_run_config(*, event_ids: list[int], reason: str) -> dict[str, Any]:
    """The run config the CLI, a script or a test launches the job with."""
    return {"ops": {OP_NAME: {"config": {"event_ids": list(event_ids), "reason": reason}}}}


@dg.op(config_schema=_SCHEMA, out=dg.Out(io_manager_key="sweep_io_manager"))
def _dismiss_events(
    context: dg.OpExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
) -> dg.Output[DismissResult]:
    """Marks the named dead or expired events `dismissed`, audited with the reason."""
    config = context.op_config
    result = dismiss_events(
        payments_db.engine,
        config["event_ids"],
        config["reason"],
        by=ByHand(
            SweepParams.from_settings(settings),
            trigger_from_tags(context.run.tags),
            context.run.run_id,
        ),
    )
    context.log.info(
        f"dismissal ({_audit(result)}): {len(result.dismissed)} dismissed, "
        f"{len(result.refused)} refused"
    )
    for refusal in result.refused:
        context.log.warning(f"not dismissed #{refusal.event_id}: {refusal.why}")
    found = f"{len(result.dismissed)} dismissed" if result.dismissed else "nothing dismissed"
    tag_found(context, found + (f", {len(result.refused)} refused" if result.refused else ""))
    return dg.Output(result, metadata=dismiss_metadata(result))


dismiss_events_op = _dismiss_events.configured(_checked, name=OP_NAME, config_schema=_SCHEMA)


def _audit(result: DismissResult) -> str:
    return f"sweep #{result.sweep_id}" if result.sweep_id is not None else "no audit row"


def dismiss_metadata(result: DismissResult) -> dict[str, Any]:
    """The run page of a dismissal: counts, the Markdown report, the table of what was settled."""
    dismissed = [
        {
            "id": s.event.id,
            "provider": s.event.provider.value,
            "provider_event_id": s.event.provider_event_id,
            "event_type": s.event.event_type,
            "attempts": s.attempts,
            "last_error": s.last_error or "",
        }
        for s in result.dismissed
    ]
    columns = [
        ("id", "int"),
        ("provider", "string"),
        ("provider_event_id", "string"),
        ("event_type", "string"),
        ("attempts", "int"),
        ("last_error", "string"),
    ]
    return {
        "report": dg.MetadataValue.md(dismiss_markdown(result)),
        "sweep_id": dg.MetadataValue.text(str(result.sweep_id or "none")),
        "dismissed": len(result.dismissed),
        "refused": len(result.refused),
        "dismissed_events": table(dismissed, columns),
    }


def dismiss_markdown(result: DismissResult) -> str:
    lines = []
    if result.refused:
        lines += [f"**ATTENTION**: {len(result.refused)} id(s) refused (below, with why)", ""]
    lines.append(
        f"**Dismissed {len(result.dismissed)}** (reason: {result.reason}); "
        + (
            f"audit: sweep #{result.sweep_id} (`sweep_events where sweep_id = {result.sweep_id}`)."
            if result.sweep_id is not None
            else "no audit row: nothing was dismissed."
        )
    )
    if result.dismissed:
        lines += [
            "",
            "| id | provider | event | type | last_error |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {s.event.id} | {s.event.provider.value} | `{s.event.provider_event_id}` | "
            f"{s.event.event_type} | {cell(s.last_error)} |"
            for s in result.dismissed
        ]
    if result.refused:
        lines += ["", f"**Refused {len(result.refused)}**", "", "| id | why |", "| --- | --- |"]
        lines += [f"| {r.event_id} | {r.why} |" for r in result.refused]
    return "\n".join(lines)


@dg.job(
    name=JOB_NAME,
    executor_def=dg.in_process_executor,
    description=(
        "Settle dead or expired webhook events by hand: status dismissed (no effect, never "
        "swept), audited with the reason. Run config: event_ids: [12, 13], reason: '...'."
    ),
)
def dismiss_webhook_events() -> None:
    dismiss_events_op()

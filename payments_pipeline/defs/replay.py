"""The job `replay_webhook_events`: the audited replay (`payments_pipeline.replay`), launched from
the launchpad.

Its run config is flat (a `ConfigMapping` onto the one op), either the events by id:

    event_ids: [812, 813]

or the dead events of a provider since a date (`status` may only be `dead`; `limit` caps one run):

    provider: stripe
    status: dead
    since: "2026-11-30"

Refused before any run exists: an unknown provider or status (Dagster's config check, as you
type), and, with one sentence when the run is launched (the job's config mapping), a `since` that
is not an ISO 8601 date or time, `limit < 1`, and a config that gives both forms or neither (the
launchpad's prefilled defaults give neither: the sentence says what to fill in).
The events go round through the `dispatcher` resource (`PAYMENTS_DISPATCH`); the replay is one
`sweep_runs` row (who launched it, this run's id) and one `sweep_events` row per event replayed.
The run page lists what it replayed and what it refused, and why, in one Markdown entry
(`report`) and two tables.
"""

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from ..config import Settings
from ..models import DispatchMode, EventRef, ProcessOutcome
from ..replay import ByHand, DeadSelection, Refusal, ReplayResult, replay_events, select_dead
from ..sweep import SweepParams
from .resources import PaymentsDatabase, PaymentsDispatcher
from .sweep_config import PROVIDER_ENUM, at_least_one, refuse
from .tables import cell, table
from .tags import tag_found, trigger_from_tags

JOB_NAME = "replay_webhook_events"
OP_NAME = "replay_events"
DEFAULT_LIMIT = 1000
SHOWN = 50  # rows per table on the run page; the audit holds them all


def parse_since(text: str) -> dt.datetime:
    """An ISO 8601 date (midnight UTC) or date and time (an offset converts to UTC; none: UTC)
    as the naive UTC the tables store."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"since must be an ISO 8601 date or time such as 2026-11-30 or "
            f"2026-11-30T12:00:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


_SCHEMA = {
    "event_ids": dg.Field(
        [int],
        default_value=[],
        description="Replay these events (dead, processed or expired stuck ones); or leave it "
        "empty and give since.",
    ),
    "provider": dg.Field(
        PROVIDER_ENUM, default_value="all", description="With since: all, stripe or monetbil."
    ),
    "status": dg.Field(
        dg.Enum("ReplayStatus", [dg.EnumValue("dead")]),
        default_value="dead",
        description="With since: the status replayed (only dead).",
    ),
    "since": dg.Field(
        dg.StringSource,
        is_required=False,
        description="Replay the dead events that died at or after this ISO date or time (UTC).",
    ),
    "limit": dg.Field(
        dg.IntSource,
        default_value=DEFAULT_LIMIT,
        description="With since: at most this many events in one run (lowest ids first).",
    ),
}


def _one_form(config: Mapping[str, Any]) -> dict[str, Any]:
    """The job's flat config onto the op's, refused with one sentence (before any run exists)
    when it asks for both forms or neither, or `since` or `limit` is out of bounds.

    The launchpad prefills the defaults (`event_ids: []`, provider, status, limit): launched as
    they are, they ask for nothing, and the refusal says what to fill in.
    """
    ids, since = config.get("event_ids") or [], config.get("since")
    if ids and since is not None:
        refuse("replay_webhook_events: give event_ids or since, not both", config)
    if not ids and since is None:
        refuse(
            "replay_webhook_events: nothing to replay: fill in event_ids (event_ids: [812, 813]) "
            'or since (since: "2026-11-30", with provider and status: dead)',
            config,
        )
    if since is not None:
        try:
            parse_since(since)
        except ValueError as exc:
            refuse(str(exc), config)
    at_least_one("limit", config["limit"], config)
    return {"ops": {OP_NAME: {"config": dict(config)}}}


def replay_run_config(
    *, event_ids: Sequence[int] = (), provider: str = "all", since: str | None = None
) -> dict[str, Any]:
    """The run config a script or test launches the job with."""
    if since is None:
        return {"event_ids": list(event_ids)}
    return {"provider": provider, "status": "dead", "since": since}


@dg.op(name=OP_NAME, config_schema=_SCHEMA, out=dg.Out(io_manager_key="sweep_io_manager"))
def replay_events_op(
    context: dg.OpExecutionContext,
    payments_db: PaymentsDatabase,
    settings: dg.ResourceParam[Settings],
    dispatcher: PaymentsDispatcher,
) -> dg.Output[ReplayResult]:
    """Replays the events the run config names, through the `dispatcher` resource, audited."""
    config = context.op_config
    mode = dispatcher.dispatch_mode
    engine = payments_db.engine
    selection: DeadSelection | None = None
    if config.get("since") is not None:
        provider = config["provider"]
        providers = SweepParams(provider=provider).providers
        selection = select_dead(
            engine, providers=providers, since=parse_since(config["since"]), limit=config["limit"]
        )
        wanted: Sequence[int] = selection.event_ids
        scope = f"dead {provider} events since {config['since']}"
    else:
        provider, wanted = "all", config["event_ids"]
        scope = f"event ids {', '.join(map(str, sorted(set(wanted))))}"
    handing = dispatcher.build(engine, settings)
    result = replay_events(
        engine,
        wanted,
        handing,
        by=ByHand(
            SweepParams.from_settings(settings),
            trigger_from_tags(context.run.tags),
            context.run.run_id,
        ),
        provider=provider,
    )
    outcomes = handing.outcomes()
    audit = f"sweep #{result.sweep_id}" if result.sweep_id is not None else "no audit row"
    context.log.info(
        f"replay ({audit}, {scope}): {len(result.replayed)} replayed via "
        f"{mode.value}, {len(result.died_again)} dead again, "
        f"{len(result.refused)} refused"
    )
    for state in result.died_again[:SHOWN]:
        context.log.warning(f"#{state.event.id} died again: {state.last_error}")
    for refusal in result.refused[:SHOWN]:
        context.log.warning(f"not replayed #{refusal.event_id}: {refusal.why}")
    if selection is not None and selection.left_out:
        context.log.warning(
            f"{selection.left_out} more dead event(s) match: not replayed by this run "
            f"(limit {config['limit']}); launch it again"
        )
    tag_found(context, replay_found(result))
    return dg.Output(result, metadata=replay_metadata(result, scope, mode, outcomes, selection))


def replay_found(result: ReplayResult) -> str:
    """The run's `payments_pipeline/found` tag: what a person reads in the Runs list."""
    parts = [f"{len(result.replayed)} replayed" if result.replayed else "nothing replayed"]
    if result.died_again:
        parts.append(f"{len(result.died_again)} dead again")
    if result.refused:
        parts.append(f"{len(result.refused)} refused")
    return ", ".join(parts)


def replay_metadata(
    result: ReplayResult,
    scope: str,
    mode: DispatchMode,
    outcomes: Mapping[ProcessOutcome, int] | None,
    selection: DeadSelection | None,
) -> dict[str, Any]:
    """The run page of a replay: the Markdown report, the counts, the two tables."""
    left_out = selection.left_out if selection is not None else 0
    processed = {}
    if outcomes is not None:
        processed = {f"processing_{o.value}": outcomes.get(o, 0) for o in ProcessOutcome}
    return {
        "report": dg.MetadataValue.md(replay_markdown(result, scope, mode, outcomes, left_out)),
        "sweep_id": dg.MetadataValue.text(str(result.sweep_id or "none")),
        "replayed": len(result.replayed),
        "dead_again": len(result.died_again),
        "refused": len(result.refused),
        "left_out": left_out,
        "engine": dg.MetadataValue.text(mode.value),
        **processed,
        "replayed_events": _replayed_table(result),
        "refused_events": _refused_table(result.refused),
    }


def _outcomes(result: ReplayResult) -> list[tuple[EventRef, str, str]]:
    """Each replayed event with what it is now and its `last_error` (empty when none)."""
    after = {s.event.id: s for s in result.after}
    rows = []
    for ref in result.replayed:
        state = after.get(ref.id)
        status = state.status.value if state is not None else "unknown"
        rows.append((ref, status, (state.last_error if state is not None else None) or ""))
    return rows


def _replayed_table(result: ReplayResult) -> Any:
    rows = [
        {
            "id": r.id,
            "provider": r.provider.value,
            "provider_event_id": r.provider_event_id,
            "event_type": r.event_type,
            "outcome": outcome,
            "last_error": error,
        }
        for r, outcome, error in _outcomes(result)[:SHOWN]
    ]
    columns = [
        ("id", "int"),
        ("provider", "string"),
        ("provider_event_id", "string"),
        ("event_type", "string"),
        ("outcome", "string"),
        ("last_error", "string"),
    ]
    return table(rows, columns)


def _refused_table(refused: Sequence[Refusal]) -> Any:
    rows = [{"id": r.event_id, "why": r.why} for r in refused[:SHOWN]]
    return table(rows, [("id", "int"), ("why", "string")])


def replay_markdown(
    result: ReplayResult,
    scope: str,
    mode: DispatchMode,
    outcomes: Mapping[ProcessOutcome, int] | None,
    left_out: int,
) -> str:
    replayed, refused, dead = len(result.replayed), len(result.refused), len(result.died_again)
    lines = []
    attention = [
        f"{dead} replayed event(s) died again (below, with last_error)" if dead else "",
        f"{refused} id(s) refused (below, with why)" if refused else "",
        f"{left_out} more event(s) match, not replayed (limit): launch again" if left_out else "",
    ]
    if any(attention):
        lines += ["**ATTENTION**: " + "; ".join(a for a in attention if a), ""]
    asked = replayed + refused
    audit = (
        f"audit: sweep #{result.sweep_id} (`sweep_events where sweep_id = {result.sweep_id}`)."
        if result.sweep_id is not None
        else "no audit row: nothing was replayed."
    )
    lines.append(f"**Replayed {replayed}** of {asked} asked ({scope}) via `{mode.value}`; {audit}")
    if refused:
        whys = Counter(r.why for r in result.refused)
        lines.append(
            f"**Refused {refused}**: " + "; ".join(f"{n} {why}" for why, n in whys.items()) + "."
        )
    if outcomes:
        done = ", ".join(f"{n} {o.value}" for o, n in sorted(outcomes.items()) if n)
        lines.append(f"Processed here (inline): {done}.")
    elif replayed:
        lines.append(f"Handed on to the `{mode.value}` engine's workers.")
    if replayed:
        lines += [
            "",
            "| id | provider | event | type | outcome | last_error |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.id} | {r.provider.value} | `{r.provider_event_id}` | {r.event_type} | "
            f"{outcome} | {cell(error)} |"
            for r, outcome, error in _outcomes(result)[:SHOWN]
        ]
        if replayed > SHOWN:
            lines.append(f"\n{SHOWN} of {replayed} shown (lowest ids first).")
    if refused:
        lines += ["", "| refused id | why |", "| --- | --- |"]
        lines += [f"| {r.event_id} | {r.why} |" for r in result.refused[:SHOWN]]
        if refused > SHOWN:
            lines.append(f"\n{SHOWN} of {refused} shown.")
    if dead:
        lines += [
            "",
            "**What to do next**: fix what each `last_error` names, then replay them again, or "
            "settle them by hand with the job `dismiss_webhook_events` (`event_ids`, `reason`).",
        ]
    if not replayed and not refused:
        lines.append("Nothing matched: no event was replayed.")
    return "\n".join(lines)


@dg.job(
    name=JOB_NAME,
    config=dg.ConfigMapping(config_fn=_one_form, config_schema=_SCHEMA),
    executor_def=dg.in_process_executor,
    description=(
        "Audited replay of dead (or processed) webhook events, dispatched through "
        "PAYMENTS_DISPATCH. Run config: event_ids: [12, 13], or provider: stripe, status: dead, "
        'since: "2026-11-30".'
    ),
)
def replay_webhook_events() -> None:
    replay_events_op()

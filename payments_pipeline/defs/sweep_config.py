"""The `sweep` resource: what a launch may override per run (`minutes`, `provider`).

Both are refused before a run exists: `provider: paypal` by Dagster's config check (an enum,
which the launchpad flags as you type), `minutes: 0` by the resource's config mapping when the run
is launched (the launchpad shows the one sentence in place of starting a run). The schedule, the
sensor, the CLI and scripts launch with `sweep_run_config(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NoReturn, get_args

import dagster as dg

from ..config import Settings
from ..sweep import ALL, SweepParams

ProviderChoice = Literal["all", "stripe", "monetbil"]


@dataclass(frozen=True)
class SweepSettings:
    """What the `sweep` resource hands the scan: the run-level parameters, already validated."""

    minutes: int
    provider: str = ALL

    def params(self, settings: Settings) -> SweepParams:
        """The core's parameters, with the deployment's window and timeouts."""
        return SweepParams.from_settings(settings, minutes=self.minutes, provider=self.provider)


def refuse(sentence: str, config: Any) -> NoReturn:
    """Refuse a run config in a config mapping with one sentence.

    Dagster's config schema has no numeric bounds and no cross-field rules, so the webserver's
    as-you-type check (which reads the schema alone) cannot see `minutes: 0`. A config mapping
    (`configured`, `ConfigMapping`) runs in the code location while the run's plan is built, before
    any run exists (a launch from the launchpad or the GraphQL API, `execute_in_process`,
    `dg.validate_run_config`). Dagster passes its own errors out of a mapping untouched, so the
    launch is refused with this sentence as the error's message (no traceback in it), where any
    other exception would come wrapped in "The config mapping function ... has thrown an
    unexpected error".
    """
    raise dg.DagsterInvalidConfigError(sentence, [], config)


def at_least_one(what: str, value: int, config: Any) -> int:
    """`value` when it is a whole number >= 1, else the refusal naming `what`."""
    if value < 1:
        refuse(f"{what} must be a whole number >= 1, got {value}", config)
    return value


PROVIDER_ENUM = dg.Enum("SweepProvider", [dg.EnumValue(p) for p in get_args(ProviderChoice)])


def _settings(config: dict[str, Any]) -> SweepSettings:
    return SweepSettings(**config)


def sweep_resource(default_minutes: int) -> dg.ResourceDefinition:
    """`resources: {sweep: {config: {minutes: 5, provider: stripe}}}`; both have defaults.

    A resource with an explicit config schema (not a `ConfigurableResource`: Dagster turns a
    pydantic `Field(ge=1)` into a plain int and leaves the bound to pydantic, at resource
    initialisation, when the run exists and its first step fails), `configured` with the
    mapping that refuses `minutes` below 1 before the run exists.
    """
    inner = dg.ResourceDefinition(
        resource_fn=lambda context: _settings(context.resource_config),
        config_schema={"minutes": int, "provider": str},
        description="Run-level parameters of one sweep.",
    )

    def check(config: dict[str, Any]) -> dict[str, Any]:
        minutes = at_least_one("minutes", config["minutes"], config)
        return {"minutes": minutes, "provider": config["provider"]}

    return inner.configured(
        check,
        config_schema={
            "minutes": dg.Field(
                dg.IntSource,
                default_value=default_minutes,
                description="Stuck threshold in minutes, at least 1 "
                "(default: PAYMENTS_STUCK_REQUEUE_MINUTES).",
            ),
            "provider": dg.Field(
                PROVIDER_ENUM,
                default_value=ALL,
                description="all, stripe or monetbil.",
            ),
        },
    )


def sweep_run_config(*, minutes: int, provider: str) -> dict[str, Any]:
    """The run config every door launches the job with (schedule, sensor, CLI, a script)."""
    return {"resources": {"sweep": {"config": {"minutes": minutes, "provider": provider}}}}

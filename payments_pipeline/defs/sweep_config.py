"""The `sweep` resource: what a launch may override per run (`minutes`, `provider`).

Both are refused by Dagster's config check before a run exists: `provider: paypal` (an enum, which
the launchpad flags as you type) and `minutes: 0` (`AtLeastOne`, refused when the run is
launched: the launchpad shows the error in place of starting a run). The schedule, the sensor, the
CLI and scripts launch with `sweep_run_config(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import dagster as dg

# The error Dagster's docs name for a config type that refuses a value in `post_process`; it is
# exported by `dagster._config` only.
from dagster._config import PostProcessingError

from ..config import Settings
from ..sweep import SweepParams

ProviderChoice = Literal["all", "stripe", "monetbil"]


@dataclass(frozen=True)
class SweepSettings:
    """What the `sweep` resource hands the scan: the run-level parameters, already validated."""

    minutes: int
    provider: str = "all"

    def params(self, settings: Settings) -> SweepParams:
        """The core's parameters, with the deployment's window and timeouts."""
        return SweepParams.from_settings(settings, minutes=self.minutes, provider=self.provider)


class AtLeastOne(dg.ScalarUnion):
    """A whole number >= 1, or `{env: VAR}` like every int in Dagster config (`what` names it in
    the refusal; `key` is the config type's unique name).

    Dagster turns a pydantic `Field(ge=1)` into a plain int and leaves the bound to pydantic, at
    resource initialisation: the run exists by then and its first step fails with a stack trace.
    The config schema has no numeric bounds, but a config type's `post_process` runs while Dagster
    resolves the run config in the code location (`execute_in_process`; a launch from the launchpad
    or the GraphQL API, which asks the code location for the execution plan first), before any run
    is created: `DagsterInvalidConfigError`. The launchpad's as-you-type check reads the schema
    alone, so it flags `minutes: 0` only when "Materialize" is pressed.
    """

    def __init__(self, what: str, key: str) -> None:
        super().__init__(scalar_type=int, non_scalar_schema=dg.Selector({"env": str}), _key=key)
        self.what = what

    def post_process(self, value: Any) -> int:
        number = int(dg.IntSource.post_process(value))  # resolves {env: VAR}
        if number < 1:
            raise PostProcessingError(f"{self.what} must be a whole number >= 1, got {number}")
        return number


# One instance per config type name: Dagster keys its config types by `_key`.
_MINUTES = AtLeastOne("minutes", "SweepMinutes")
PROVIDER_ENUM = dg.Enum("SweepProvider", [dg.EnumValue(p) for p in get_args(ProviderChoice)])


def sweep_resource(default_minutes: int) -> dg.ResourceDefinition:
    """`resources: {sweep: {config: {minutes: 5, provider: stripe}}}`; both have defaults.

    A resource with an explicit config schema (not a `ConfigurableResource`): a pythonic field
    cannot carry a config type of its own, and `minutes` needs `AtLeastOne`.
    """
    return dg.ResourceDefinition(
        resource_fn=lambda context: SweepSettings(**context.resource_config),
        config_schema={
            "minutes": dg.Field(
                _MINUTES,
                default_value=default_minutes,
                description="Stuck threshold in minutes, at least 1 "
                "(default: PAYMENTS_STUCK_REQUEUE_MINUTES).",
            ),
            "provider": dg.Field(
                PROVIDER_ENUM,
                default_value="all",
                description="all, stripe or monetbil.",
            ),
        },
        description="Run-level parameters of one sweep.",
    )


def sweep_run_config(*, minutes: int, provider: str) -> dict[str, Any]:
    """The run config every door launches the job with (schedule, sensor, CLI, a script)."""
    return {"resources": {"sweep": {"config": {"minutes": minutes, "provider": provider}}}}

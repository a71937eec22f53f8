"""What each command that asks Stripe's API (`reconcile stripe` its Events API, `drift stripe` its
PaymentIntents and Charges API) says when the key is missing or refused, when the API does not
answer, or answers 500 after the SDK's retries: one `error:` line, the exit code, no traceback,
the key never shown, nothing written."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import store

from ..doors import closed_port_url, point_at_stripe, run_cli
from ..fakes._stripe_api import FakeStripeAPI

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

# Each command's arguments, and the fake that plays the API it asks.
WINDOW = ("--since", "2026-12-07T09:00:00Z", "--until", "2026-12-07T12:00:00Z")
COMMANDS = {
    "reconcile stripe": (("reconcile", "stripe", *WINDOW), "stripe_events_api"),
    "drift stripe": (("drift", "stripe", "--date", "2026-12-05"), "stripe_payments_api"),
}
# What a run that got as far as writing would have left.
WRITTEN_BY_A_RUN = (store.webhook_events, store.sweep_runs, store.sweep_events, store.payments)
OUTPUTS = {"text": (), "json": ("--json",)}


@dataclass(frozen=True)
class Command:
    """One of the commands, pointed at its fake API and `engine`'s database."""

    argv: tuple[str, ...]
    api: FakeStripeAPI
    engine: Engine
    capsys: pytest.CaptureFixture[str]

    def fails(self, code: int, message: str, key: str, *, output: str, debug: bool = False) -> None:
        """Run it: one `error:` line holding `message`, exit `code`, `key` never shown, and not a
        row written."""
        options = ("--log-level", "debug") if debug else ()
        result = run_cli(self.capsys, *options, *self.argv, *OUTPUTS[output])
        result.assert_one_error(code, message, key)
        with self.engine.connect() as conn:
            for table in (
                store.webhook_events,
                store.sweep_runs,
                store.sweep_events,
                store.payments,
            ):
                count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                assert count == 0, table.name


@pytest.fixture(params=list(COMMANDS))
def command(
    request: pytest.FixtureRequest,
    clean_door_env: None,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Command:
    argv, fake_fixture = COMMANDS[request.param]
    api: FakeStripeAPI = request.getfixturevalue(fake_fixture)
    point_at_stripe(monkeypatch, engine, api_key=api.api_key, api_base=api.url)
    return Command(argv, api, engine, capsys)


@pytest.mark.parametrize("value", [None, "  "], ids=["unset", "blank"])
def test_without_a_key_exits_2_before_asking(
    command: Command, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("STRIPE_API_KEY")
    else:
        monkeypatch.setenv("STRIPE_API_KEY", value)
    command.fails(2, "error: STRIPE_API_KEY is not set", "sk_", output="text")
    assert command.api.requests == 0


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_a_refused_key_exits_1_without_showing_it(
    command: Command, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    wrong = "sk_test_wrong_key_0000000000001234"
    monkeypatch.setenv("STRIPE_API_KEY", wrong)
    refused = f"refused STRIPE_API_KEY at {command.api.url} (HTTP 401): check the key"
    command.fails(1, f"error: Stripe's API {refused}", wrong, output=output, debug=True)
    assert command.api.statuses == Counter({401: 1})


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_an_unreachable_api_exits_1(
    command: Command, monkeypatch: pytest.MonkeyPatch, sdk_retries: list[int], output: str
) -> None:
    url = closed_port_url()
    monkeypatch.setenv("PAYMENTS_STRIPE_API_BASE", url)
    unreachable = f"error: Stripe's API is unreachable at {url} (no answer after 3 retries)"
    command.fails(1, unreachable, command.api.api_key, output=output)
    assert sdk_retries == [1, 2, 3]


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_a_500_after_the_retries_exits_1(
    command: Command, sdk_retries: list[int], output: str
) -> None:
    command.api.fail_always(500)
    answered = f"answered HTTP 500 at {command.api.url} after 3 retries"
    command.fails(1, f"error: Stripe's API {answered}", command.api.api_key, output=output)
    assert command.api.statuses == Counter({500: 4})
    assert sdk_retries == [1, 2, 3]

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
OUTPUTS = {"text": (), "json": ("--json",)}


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    api: FakeStripeAPI


@pytest.fixture(params=list(COMMANDS))
def command(
    request: pytest.FixtureRequest,
    clean_door_env: None,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> Command:
    """The command's arguments and its fake API, with `engine`'s database, in the environment."""
    argv, fake_fixture = COMMANDS[request.param]
    api: FakeStripeAPI = request.getfixturevalue(fake_fixture)
    point_at_stripe(monkeypatch, engine, api_key=api.api_key, api_base=api.url)
    return Command(argv, api)


def _nothing_written(engine: Engine) -> None:
    with engine.connect() as conn:
        for table in (store.webhook_events, store.sweep_runs, store.sweep_events, store.payments):
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            assert count == 0, table.name


@pytest.mark.parametrize("value", [None, "  "], ids=["unset", "blank"])
def test_without_a_key_exits_2_before_asking(
    command: Command,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
) -> None:
    if value is None:
        monkeypatch.delenv("STRIPE_API_KEY")
    else:
        monkeypatch.setenv("STRIPE_API_KEY", value)
    run_cli(capsys, *command.argv).assert_one_error(2, "error: STRIPE_API_KEY is not set", "sk_")
    assert command.api.requests == 0
    _nothing_written(engine)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_a_refused_key_exits_1_without_showing_it(
    command: Command,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    output: str,
) -> None:
    wrong = "sk_test_wrong_key_0000000000001234"
    monkeypatch.setenv("STRIPE_API_KEY", wrong)
    result = run_cli(capsys, "--log-level", "debug", *command.argv, *OUTPUTS[output])
    refused = f"refused STRIPE_API_KEY at {command.api.url} (HTTP 401): check the key"
    result.assert_one_error(1, f"error: Stripe's API {refused}", wrong)
    assert command.api.statuses == Counter({401: 1})
    _nothing_written(engine)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_an_unreachable_api_exits_1(
    command: Command,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    sdk_retries: list[int],
    output: str,
) -> None:
    url = closed_port_url()
    monkeypatch.setenv("PAYMENTS_STRIPE_API_BASE", url)
    result = run_cli(capsys, *command.argv, *OUTPUTS[output])
    unreachable = f"error: Stripe's API is unreachable at {url} (no answer after 3 retries)"
    result.assert_one_error(1, unreachable, command.api.api_key)
    assert sdk_retries == [1, 2, 3]
    _nothing_written(engine)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_a_500_after_the_retries_exits_1(
    command: Command,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    sdk_retries: list[int],
    output: str,
) -> None:
    command.api.fail_always(500)
    result = run_cli(capsys, *command.argv, *OUTPUTS[output])
    answered = f"answered HTTP 500 at {command.api.url} after 3 retries"
    result.assert_one_error(1, f"error: Stripe's API {answered}", command.api.api_key)
    assert command.api.statuses == Counter({500: 4})
    assert sdk_retries == [1, 2, 3]
    _nothing_written(engine)

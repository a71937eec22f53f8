"""The command and the code location as the tests drive them (a plugin of the root conftest):
`run_cli` in process and `run_installed` through the installed entry point, the one-`error:`-line
check every error path shares, and the environment they read, cleared to the documented defaults
and pointed at a database and a fake."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import Engine

from payments_pipeline.cli import main

from .fakes.stripe_events_api import FakeStripeEventsAPI
from .fakes.stripe_payments_api import FakeStripePaymentsAPI

# What the reconciliation's and the drift's doors read: a value leaking from the shell would
# change what they ask, where, or how they hand events on.
DOOR_ENV = (
    "DAGSTER_HOME",
    "PAYMENTS_DATABASE_URL",
    "STRIPE_API_KEY",
    "PAYMENTS_STRIPE_API_BASE",
    "MONETBIL_CHECK_PAYMENT_URL",
    "PAYMENTS_DISPATCH",
    "PAYMENTS_RECONCILE_ENABLED",
    "PAYMENTS_RECONCILE_START_DATE",
)


class CliResult(NamedTuple):
    """What one run of the command left: `code, out, err = run_cli(...)` unpacks it."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return error_lines(self.err)

    def assert_one_error(self, code: int, message: str, key: str) -> None:
        """The error path's contract: exit `code`, one `error:` line holding `message`, nothing
        on stdout, no traceback, and `key` (a secret) shown nowhere."""
        assert self.code == code, self.err
        assert len(self.error_lines) == 1, self.err
        assert message in self.error_lines[0], self.err
        assert "Traceback" not in self.err and self.out == ""
        assert key not in self.out and key not in self.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> CliResult:
    """`payments-pipeline *argv` in process, with what it printed."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def run_installed(*argv: str, env: dict[str, str], cwd: Path) -> CliResult:
    """`payments-pipeline *argv` through the installed entry point, where the debug logs really
    go to stderr; `env` (and a PATH) is all it sees."""
    exe = Path(sys.executable).with_name("payments-pipeline")
    done = subprocess.run(
        [str(exe), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def stripe_env_of(engine: Engine, *, api_key: str, api_base: str) -> dict[str, str]:
    """`engine`'s database and a Stripe API (a fake's or localstripe's), as the environment."""
    return {
        "PAYMENTS_DATABASE_URL": url_of(engine),
        "STRIPE_API_KEY": api_key,
        "PAYMENTS_STRIPE_API_BASE": api_base,
    }


def point_at_stripe(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, *, api_key: str, api_base: str
) -> Engine:
    """`stripe_env_of(...)` set in this process's environment."""
    for name, value in stripe_env_of(engine, api_key=api_key, api_base=api_base).items():
        monkeypatch.setenv(name, value)
    return engine


@pytest.fixture
def clean_door_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of `DOOR_ENV` set: each test starts from the documented defaults."""
    for name in DOOR_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stripe_events_env(
    clean_door_env: None,
    engine: Engine,
    stripe_events_api: FakeStripeEventsAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> Engine:
    """`engine`, with its database and the fake Events API in the environment."""
    return point_at_stripe(
        monkeypatch, engine, api_key=stripe_events_api.api_key, api_base=stripe_events_api.url
    )


@pytest.fixture
def stripe_payments_env(
    clean_door_env: None,
    engine: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> Engine:
    """`engine`, with its database and the fake PaymentIntents and Charges API in the
    environment."""
    return point_at_stripe(
        monkeypatch, engine, api_key=stripe_payments_api.api_key, api_base=stripe_payments_api.url
    )

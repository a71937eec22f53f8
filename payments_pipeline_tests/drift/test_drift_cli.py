"""`payments-pipeline drift stripe --date D [--json]` against our fake Stripe PaymentIntents and
Charges API, our rows made by signed webhooks through the receiver: the JSON lists every
difference (not only the 50 the text shows), the text, a bad date, and the installed command's
debug logs (never the key). The Stripe API's faults, for this command and `reconcile stripe`,
are in `providers/test_stripe_api.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from ..doors import run_cli, run_installed, stripe_env_of
from ..fakes.stripe_payments_api import FakeStripePaymentsAPI
from .support import T0, Receiver

DATE = ("--date", "2026-12-05")
ADVICE = (
    "Recover the missed events first, from that day to now (a later refund's event is dated "
    "the day it was made): payments-pipeline reconcile stripe --since 2026-12-05 (or the job "
    "reconcile_stripe_events with ops: "
    '{recovered_webhook_events: {config: {since: "2026-12-05"}}}); Stripe keeps events '
    "30 days. What still differs afterwards is a handler or a change made at Stripe without "
    "an event."
)
pytestmark = pytest.mark.usefixtures("clean_door_env")


def _day_with_62_differences(
    api: FakeStripePaymentsAPI, receiver: Receiver
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """60 payments that never reached us, one we hold refunded at Stripe since, one that
    matches, one in flight: 62 differences over 61 payments."""
    lost = [api.add_payment_intent(created=T0 + 60 * i, amount=100 + i) for i in range(60)]
    refunded = api.add_payment_intent(created=T0 + 7000, amount=5000)
    receiver.deliver_of(api, refunded, "payment_intent.succeeded")
    api.refund(refunded["id"], 500)
    matching = api.add_payment_intent(created=T0 + 7100, amount=42)
    receiver.deliver_of(api, matching, "payment_intent.succeeded")
    api.add_payment_intent(created=T0 + 7200, amount=1, status="processing")
    return lost, refunded


def test_json_lists_every_difference_not_only_50(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lost, refunded = _day_with_62_differences(stripe_payments_api, receiver)
    code, out, err = run_cli(capsys, "drift", "stripe", *DATE, "--json")
    assert code == 0, err
    expected = [
        {"reference": pi["id"], "kind": "missing_here", "ours": "", "stripe": "succeeded"}
        for pi in lost
    ] + [
        {
            "reference": refunded["id"],
            "kind": "status",
            "ours": "succeeded",
            "stripe": "partially_refunded",
        },
        {"reference": refunded["id"], "kind": "amount_refunded", "ours": "0", "stripe": "500"},
    ]
    expected.sort(key=lambda d: d["reference"])  # by reference, kinds in KINDS' order
    assert json.loads(out) == {
        "date": "2026-12-05",
        "compared": 62,
        "in_flight": 1,
        "by_kind": {"missing_here": 60, "status": 1, "amount_refunded": 1},
        "differences": expected,
    }


def test_the_text_shows_50_differences_and_what_to_do(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _day_with_62_differences(stripe_payments_api, receiver)
    code, out, err = run_cli(capsys, "drift", "stripe", *DATE)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == [
        "Drift on 2026-12-05 (UTC): 62 Stripe payments compared with ours "
        "(1 still in flight at Stripe, not compared)",
        "61 payments differ: missing_here 60, status 1, amount_refunded 1",
        f"  {'reference':<32} {'kind':<16} {'ours':>14} {'stripe':>14}",
    ]
    rows = lines[3:53]
    assert len(rows) == 50 and all(r.startswith("  pi_") for r in rows)
    assert lines[53:] == ["  ... 12 more (--json lists every one)", ADVICE]
    missing = [r.split() for r in rows if " missing_here " in r]
    assert all(fields[2:] == ["-", "succeeded"] for fields in missing)  # "-": we have no row


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_text_of_a_day_that_matches(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pi = stripe_payments_api.add_payment_intent(created=T0 + 5, amount=300)
    receiver.deliver_of(stripe_payments_api, pi, "payment_intent.succeeded")
    code, out, err = run_cli(capsys, "drift", "stripe", "--date", " 2026-12-05 ")
    assert code == 0, err
    assert out.splitlines() == [
        "Drift on 2026-12-05 (UTC): 1 Stripe payments compared with ours "
        "(0 still in flight at Stripe, not compared)",
        "No difference: our payments say what Stripe says.",
    ]
    code, out, _ = run_cli(capsys, "drift", "stripe", *DATE, "--json")
    assert json.loads(out)["differences"] == [] and json.loads(out)["by_kind"] == {}


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--date", "2026-13-01"],
            "error: the date must be YYYY-MM-DD, such as 2026-12-07, got '2026-13-01'",
        ),
        (["--date", "yesterday"], "error: the date must be YYYY-MM-DD"),
        (["--date", ""], "error: the date must be YYYY-MM-DD"),
        (["--date", "2026-12-05T00:00:00Z"], "error: the date must be YYYY-MM-DD"),
        ([], "error: Missing option '--date'"),
    ],
)
def test_a_bad_date_exits_2_before_asking(
    stripe_payments_env: Engine,
    stripe_payments_api: FakeStripePaymentsAPI,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    stripe_payments_api.add_payment_intent(created=T0, amount=1)
    result = run_cli(capsys, "drift", "stripe", *argv, "--json")
    result.assert_one_error(2, message, stripe_payments_api.api_key)
    assert stripe_payments_api.requests == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_installed_command_with_debug_logs_never_shows_the_key(
    stripe_payments_env: Engine, stripe_payments_api: FakeStripePaymentsAPI, tmp_path: Path
) -> None:
    """The installed entry point, where the debug logs really go to stderr."""
    stripe_payments_api.add_payment_intent(created=T0 + 1, amount=100)
    key = stripe_payments_api.api_key
    env = stripe_env_of(stripe_payments_env, api_key=key, api_base=stripe_payments_api.url)
    argv = ("--log-level", "debug", "drift", "stripe", *DATE, "--json")

    ok = run_installed(*argv, env=env, cwd=tmp_path)
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["by_kind"] == {"missing_here": 1}
    assert "/v1/payment_intents" in ok.err  # the debug lines did reach stderr
    assert key not in ok.out and key not in ok.err

    wrong = "sk_test_another_wrong_drift_key_777"
    refused = run_installed(*argv, env=env | {"STRIPE_API_KEY": wrong}, cwd=tmp_path)
    refused.assert_one_error(1, "error: Stripe's API refused STRIPE_API_KEY", wrong)

"""localstripe 1.15.10 as a subprocess on 127.0.0.1, and the helpers scenario tests need.

`LocalStripe.start()` runs `python -m payments_pipeline_tests.fakes.localstripe_server --port 0`
(localstripe's app, 127.0.0.1 only, nothing pickled to /tmp), reads the port it bound, waits until
it answers, and `stop()` ends it by its pid (SIGTERM, wait, SIGKILL if needed). The server also
exits by itself when its parent dies or after `max_seconds`.

What localstripe 1.15.10 does, read from its resources.py/webhooks.py and checked by
payments_pipeline_tests/reconcile/test_localstripe.py:

- Events it emits for a PaymentIntent: `payment_intent.succeeded` when a confirmed intent's card
  charge succeeds, `payment_intent.payment_failed` when it is declined. Nothing else: no
  `payment_intent.created`, no `charge.succeeded`/`charge.failed`, and a refund
  (`POST /v1/refunds`) emits no `charge.refunded`. (Other resources emit `customer.*`,
  `invoice.*`, `plan.created`, `product.created`, `payout.*`, `customer.subscription.*`.)
- Declines: card 4000000000000002 is declined only when *attached to a customer*; as a
  PaymentIntent's payment method it succeeds. The card whose charge is declined is
  4000000000000341 (as on real Stripe). The confirm then answers 402 (the SDK raises
  `stripe.CardError`, code `card_declined`, but the body's `type` is `invalid_request_error`, not
  `card_error`, and it names the charge, not the PaymentIntent); the intent is left in
  `requires_payment_method` with `last_payment_error` {charge, code, message}.
- Event shape: `{"api_version": "2017-08-15", "created", "data": {"object": ...}, "id": "evt_" +
  14 characters, "livemode": false, "object": "event", "type"}`. No `pending_webhooks`, no
  `request`, no `data.previous_attributes`. `data.object` is the object as exported when the event
  was made: a PaymentIntent there has no `amount_received`, `capture_method` is
  `"automatic_async"`, `latest_charge` is the whole Charge object (real Stripe: an id) and the
  deprecated `charges` list is present too. Object ids are prefix + 14 random characters.
- `GET /v1/events` lists in *creation order, oldest first* (real Stripe: newest first), and the
  list carries `total_count`. Supported filters: `type` (one, exact), `created[gt|gte|lt|lte]`,
  `limit` (default 10, no maximum), `starting_after`. `types[]` (or the SDK's `types[0]`) is a 400
  "Unexpected types"; so is any other unknown parameter (`delivery_success`, `ending_before`). A
  `starting_after` it does not know restarts the list from the beginning (real Stripe: 400).
- Auth: any `Bearer sk_...` key longer than 5 characters is accepted (a wrong secret key is not a
  401); a missing key, or a `pk_...` one, is 401 `{"error": {"message": "Unauthorized", ...}}`.
- Webhooks: `POST /_config/webhooks/<id>` with `url`, `secret` (and optionally `events`, a list
  of types) registers an endpoint. Each event is POSTed once, about 1 s after it happens, to every
  endpoint, with `Stripe-Signature: t=<event.created>,v1=<hmac>` (the timestamp is the event's
  `created`, not the send time) and the body `json.dumps(event, indent=2, sort_keys=True)`. No
  retry whatever the endpoint answers; an endpoint registered after the event gets nothing.
- `DELETE /_config/data` empties the store (registered webhooks stay).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import requests
import stripe

from ._http import Running

API_KEY = "sk_test_12345"
SUCCEEDING_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # attaches, but every charge on it is declined
MODULE = "payments_pipeline_tests.fakes.localstripe_server"


class LocalStripe(Running):
    """One localstripe process; use as a context manager or call start()/stop()."""

    def __init__(self, log: Path | None = None, *, max_seconds: float = 900.0) -> None:
        self.log = log
        self.max_seconds = max_seconds
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._sessions: list[requests.Session] = []
        self._client: stripe.StripeClient | None = None

    # --- process -------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        command = [sys.executable, "-m", MODULE, "--port", "0"]
        command += ["--max-seconds", str(self.max_seconds)]
        with open(self.log or os.devnull, "ab") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        try:
            port = self._read_port(timeout)
            self.url = f"http://127.0.0.1:{port}"
            self._wait_answering(timeout)
        except BaseException:
            self.stop()
            raise

    def _read_port(self, timeout: float) -> int:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"localstripe printed no port within {timeout}s")
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"localstripe did not start: {line!r} (log: {self.log})")
        return int(line.split()[-1])

    def _wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(
            self.url + "/v1/events?limit=1", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"localstripe exited {self.process.returncode}")
            try:
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                exc.close()  # it holds the response open
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"localstripe did not answer within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        for session in self._sessions:
            session.close()
        self._sessions.clear()
        self._client = None
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    # --- helpers ---------------------------------------------------------------------------------

    def client(self, api_key: str = API_KEY, **options: Any) -> stripe.StripeClient:
        """A new official SDK client on this server (its HTTP session closed by `stop()`)."""
        session = requests.Session()
        self._sessions.append(session)
        return stripe.StripeClient(
            api_key,
            base_addresses={"api": self.url},
            http_client=stripe.RequestsClient(session=session),
            **options,
        )

    @property
    def sdk(self) -> stripe.StripeClient:
        """One shared client for the helpers below."""
        if self._client is None:
            self._client = self.client()
        return self._client

    def pay(self, amount: int, currency: str, *, decline: bool = False) -> str:
        """Create and confirm a card PaymentIntent; its id. It succeeds (one
        `payment_intent.succeeded` event) or, with `decline`, fails on a declined card (one
        `payment_intent.payment_failed`; the SDK's `CardError` is swallowed here)."""
        card = DECLINED_CARD if decline else SUCCEEDING_CARD
        method = self.sdk.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        intent = self.sdk.v1.payment_intents.create(
            params={"amount": amount, "currency": currency, "payment_method": method.id}
        )
        try:
            confirmed = self.sdk.v1.payment_intents.confirm(intent.id)
        except stripe.CardError:
            if not decline:
                raise
            return intent.id
        assert not decline, "a declined card was charged"
        assert confirmed.status == "succeeded", confirmed.status
        return intent.id

    def register_webhook(
        self, url: str, secret: str, *, events: list[str] | None = None, webhook_id: str = "pp"
    ) -> None:
        """Have localstripe sign and POST every event (or only `events`' types) to `url`."""
        document: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            document["events"] = events
        self._post_config(f"/_config/webhooks/{webhook_id}", json.dumps(document).encode())

    def flush(self) -> None:
        """Empty localstripe's store (registered webhooks stay)."""
        request = urllib.request.Request(self.url + "/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def _post_config(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def events(self, **params: Any) -> list[stripe.Event]:
        """Every event (through the SDK, auto-paging), in localstripe's order: oldest first."""
        query: Any = {"limit": 100, **params}  # the SDK's TypedDict, checked by the server
        listing = self.sdk.v1.events.list(params=query)
        return list(listing.auto_paging_iter())

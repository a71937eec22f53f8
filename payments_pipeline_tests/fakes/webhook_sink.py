"""A webhook endpoint on 127.0.0.1 that records every POST: where localstripe delivers to.

    with WebhookSink() as sink:
        ...register sink.url...
        [delivery] = sink.wait_for(1)
        delivery.headers["Stripe-Signature"], delivery.body

`status` is what it answers (set 400 or 500 to play an endpoint that refuses deliveries).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ._http import QuietHandler, Served, ServerThread


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # names as sent; look up case-sensitively, e.g. "Stripe-Signature"
    body: bytes


class WebhookSink(Served):
    def __init__(self, path: str = "/webhooks/stripe", status: int = 200) -> None:
        self.path = path
        self.status = status
        self.deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                delivery = Delivery(self.path, dict(self.headers.items()), self.read_body())
                with sink._changed:
                    sink.deliveries.append(delivery)
                    sink._changed.notify_all()
                self.send_json(sink.status, {"received": sink.status < 300})

        self._server = ServerThread(Handler)

    @property
    def url(self) -> str:
        return self._server.base_url + self.path

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The first `count` deliveries, once that many arrived; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.deliveries)} of {count} deliveries after {timeout}s"
                self._changed.wait(left)
            return list(self.deliveries[:count])

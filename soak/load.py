"""The load generator: signed deliveries to the receiver, as a provider would make them.

Stories are created at `rate` events per second. Each event is delivered 1-5 times (some copies at
the same instant, so they race in the gate; some a minute late, as a provider's own retry), a
story's events may go out in reverse order (the refund before its success), and a few forged
deliveries (wrong secret) are mixed in. A delivery
answered 503, 5xx, or lost to a connection error is retried later, as Stripe does, until one copy
of the event gets a 200. Every answer is recorded per event: the verifier counts the dispatches
the gate granted, and treats a failed delivery as ambiguous (its gate transaction may have
committed before the failure).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from payments_pipeline.models import Provider
from payments_pipeline.providers import stripe

from .config import SoakConfig
from .stories import SoakEvent, Story, StoryFactory

log = logging.getLogger(__name__)

COPIES = (1, 2, 3, 4, 5)
COPY_WEIGHTS = (30, 25, 20, 15, 10)
CONCURRENT_COPY_CHANCE = 0.35
# A copy delivered a minute or more later, as a provider retrying on its own schedule: once a
# failed event's backoff is over it takes the gate's claim 2 (`redispatched`), racing the sweeps'
# `failed_old` claim for the same row. Planned only if it still falls inside the load phase.
LATE_COPY_CHANCE = 0.2
LATE_COPY_DELAY = (61.0, 90.0)
SENDER_THREADS = 24


@dataclass
class EventRecord:
    """What happened to one event's deliveries."""

    event: SoakEvent
    outcomes: Counter[str] = field(default_factory=Counter)  # "200 dispatched", "503", "error"
    dispatches: int = 0  # 200 answers whose outcome handed the event on
    ambiguous: int = 0  # answers after which the gate may or may not have committed
    copies: int = 0  # copies sent (retries excluded)
    retries: int = 0
    accepted: bool = False


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    event: SoakEvent = field(compare=False)
    retry: bool = field(compare=False, default=False)
    concurrent: bool = field(compare=False, default=False)


class LoadGenerator:
    """Runs on its own threads from `start()` until `stop_new()` and `drain()`."""

    def __init__(self, config: SoakConfig, base_url: str, factory: StoryFactory) -> None:
        self.config = config
        self.base_url = base_url
        self.factory = factory
        self.rng = random.Random(config.seed)
        self.stories: list[Story] = []
        self.records: dict[tuple[str, str], EventRecord] = {}
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.signatures: set[str] = set()  # every signature sent: none may reach a log
        self._heap: list[_Scheduled] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._creating = threading.Event()
        self._stopping = threading.Event()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="soak-send")
        self._thread = threading.Thread(target=self._schedule_loop, name="soak-load", daemon=True)
        self._clients: list[httpx.Client] = []
        self._load_ends = float("inf")

    def start(self) -> None:
        self._load_ends = time.monotonic() + self.config.duration
        self._creating.set()
        self._thread.start()

    def stop_new(self) -> None:
        """No new stories; deliveries already planned (and their retries) still go out."""
        self._creating.clear()

    def drain(self, timeout: float) -> bool:
        """Wait until every planned delivery went out and each event is accepted; then stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._heap and self._in_flight == 0:
                    break
            time.sleep(0.2)
        self.close()
        with self._lock:
            return not self._heap

    def close(self) -> None:
        self._creating.clear()
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self._clients:
            client.close()
        self._clients.clear()

    # --- planning ---------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        started = time.monotonic()
        made = 0
        while not self._stopping.is_set():
            now = time.monotonic()
            while self._creating.is_set() and made < self.config.rate * (now - started):
                made += self._plan_story(now)
            self._submit_due(now)
            time.sleep(0.01)

    def _plan_story(self, now: float) -> int:
        story = self.factory.story()
        at = now + self.rng.uniform(0, 0.2)
        with self._lock:
            self.stories.append(story)
            for position, index in enumerate(story.send_order):
                event = story.events[index]
                self.records[event.key] = EventRecord(event)
                self._plan_copies(event, at + position * self.rng.uniform(0.05, 1.5))
            if self.rng.random() < self.config.forged_chance:
                forged = self.factory.forged()
                self.records[forged.key] = EventRecord(forged)
                self._push(_Scheduled(at, next(self._seq), forged))
        return len(story.events)

    def _plan_copies(self, event: SoakEvent, at: float) -> None:
        copies = self.rng.choices(COPIES, COPY_WEIGHTS)[0]
        late = at + self.rng.uniform(*LATE_COPY_DELAY)
        if copies > 1 and self.rng.random() < LATE_COPY_CHANCE and late < self._load_ends:
            copies -= 1  # one of the copies goes out a minute late instead
            self.counts["late_copies"] += 1
            self._push(_Scheduled(late, next(self._seq), event))
        self._push(_Scheduled(at, next(self._seq), event))
        for _ in range(copies - 1):
            if self.rng.random() < CONCURRENT_COPY_CHANCE:
                self._push(_Scheduled(at, next(self._seq), event, concurrent=True))
            else:
                self._push(_Scheduled(at + self.rng.uniform(0.05, 4.0), next(self._seq), event))

    def _push(self, item: _Scheduled) -> None:
        heapq.heappush(self._heap, item)

    def _submit_due(self, now: float) -> None:
        with self._lock:
            due = []
            while self._heap and self._heap[0].due <= now:
                due.append(heapq.heappop(self._heap))
            self._in_flight += len(due)
        for item in due:
            self._pool.submit(self._send, item)

    # --- sending ----------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.base_url, timeout=15.0)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _request(self, event: SoakEvent) -> httpx.Response:
        client = self._client()
        if event.provider is Provider.STRIPE:
            secret = self.factory.stripe_secret
            if event.forged:
                secret = "whsec_forged_" + secret
            signature = stripe.sign_payload(event.body, secret)
            self.signatures.add(signature.rsplit("v1=", 1)[-1])
            headers = {"content-type": "application/json", "stripe-signature": signature}
            return client.post("/webhooks/stripe", content=event.body, headers=headers)
        assert event.fields is not None
        self.signatures.add(event.fields["sign"])
        if self.rng.random() < self.config.query_string_chance:
            self.counts["query_string"] += 1
            return client.get(f"/webhooks/monetbil?{urlencode(event.fields)}")
        headers = {"content-type": "application/x-www-form-urlencoded"}
        return client.post("/webhooks/monetbil", content=event.body, headers=headers)

    def _send(self, item: _Scheduled) -> None:
        event = item.event
        try:
            response: httpx.Response | None = self._request(event)
            outcome = ""
        except httpx.TransportError as exc:
            response, outcome = None, f"error {type(exc).__name__}"
        try:
            self._record(item, response, outcome)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _record(self, item: _Scheduled, response: httpx.Response | None, error: str) -> None:
        event = item.event
        with self._lock:
            record = self.records[event.key]
            self.counts["deliveries"] += 1
            self.counts["retries" if item.retry else "copies"] += 1
            if item.retry:
                record.retries += 1
            else:
                record.copies += 1
                self.counts["concurrent_copies"] += item.concurrent
            status = response.status_code if response is not None else 0
            if status == 200 and response is not None:
                outcome = str(response.json().get("outcome"))
                record.outcomes[f"200 {outcome}"] += 1
                self.counts[f"outcome {outcome}"] += 1
                record.dispatches += outcome in ("dispatched", "redispatched")
                record.accepted = True
                if event.forged:
                    self.violations.append(f"forged delivery {event.event_id} was accepted")
                return
            label = error or str(status)
            record.outcomes[label] += 1
            self.counts[f"status {label.split(' ')[0]}"] += 1
            if status >= 500 or response is None:
                record.ambiguous += 1
                if not record.accepted and not self._stopping.is_set():
                    delay = self.rng.uniform(0.5, 2.0)
                    self._push(_Scheduled(time.monotonic() + delay, next(self._seq), event, True))
            elif not event.forged:
                detail = response.text[:200] if response is not None else ""
                self.violations.append(
                    f"signed delivery of {event.provider.value} {event.event_id} refused: "
                    f"{status} {detail}"
                )
            elif status != 400:
                self.violations.append(f"forged delivery {event.event_id} answered {status}")

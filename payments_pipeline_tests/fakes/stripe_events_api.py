"""A fake Stripe Events API on 127.0.0.1: `GET /v1/events` (and `GET /v1/events/<id>`) as Stripe
shapes it, for what localstripe lacks (newest-first order, `types[]`, 401 on a wrong key, faults).

    with FakeStripeEventsAPI() as api:
        api.add_event("payment_intent.succeeded", created=t, delivered=False)
        client = stripe.StripeClient(api.api_key, base_addresses={"api": api.url})

Listing, as Stripe documents it: Bearer (or Basic) auth with `api_key`; `limit` (default 10,
1..100), `starting_after`, `ending_before` (an unknown id is a 400), `created` or
`created[gt|gte|lt|lte]`, `type` (a `*` wildcard as in `payment_intent.*`), `types[]` /
`types[N]` (at most 20), `delivery_success`; newest first (`created` descending, ties by id
descending); `{"object": "list", "data", "has_more", "url": "/v1/events"}`. Any other parameter
is a 400 "Received unknown parameter". Events keep Stripe's public shape; whether an event was
delivered is this fake's own state (`delivered=` on add, `mark_delivered`) and shows only as
`pending_webhooks` (0 delivered, 1 not) and through `delivery_success`.

Events live in one list sorted by (created, id); a created window is two bisects and a page is a
slice, so 10,000 events page fast. Events may be added while it serves.

Faults, consumed in order by the next requests whatever they ask (`fail_next`), or on every
request (`fail_always`): 429 (with `Stripe-Should-Retry: true`/`false` or none: the SDK retries a
429 only when told true; 409 and 5xx it retries unless told false), 500, 401... Counters:
`requests` (every request), `pages` (list pages answered 200), `statuses`, `queries` (the
parameters of every list request, as sent).
"""

from __future__ import annotations

import base64
import bisect
import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from . import stripe_event_shapes
from ._http import QuietHandler, ServerThread

API_KEY = "sk_test_fake_events_api_4242"
MAX_TYPES = 20
_WINDOW = ("gt", "gte", "lt", "lte")
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    409: (
        "invalid_request_error",
        "lock_timeout",
        "This object cannot be accessed right now because another API request or Stripe "
        "process is currently accessing it.",
    ),
    429: (
        "invalid_request_error",
        "rate_limit",
        "Too many requests hit the API too quickly. We recommend an exponential backoff of "
        "your requests.",
    ),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def document(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": "invalid_request_error", "message": self.message}
        if self.param:
            error["param"] = self.param
        if self.code:
            error["code"] = self.code
        return {"error": error}


@dataclass
class Fault:
    status: int
    remaining: int | None  # None: every request
    should_retry: bool | None  # the Stripe-Should-Retry header; None: not sent

    def answer(self, masked_key: str) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {}
        if self.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if self.should_retry else "false"
        if self.status == 401:
            message = f"Invalid API Key provided: {masked_key}"
            return {"error": {"type": "invalid_request_error", "message": message}}, headers
        kind, code, message = _ERRORS.get(
            self.status, ("api_error", None, "An unknown error occurred. Please try again.")
        )
        error: dict[str, Any] = {"type": kind, "message": message}
        if code:
            error["code"] = code
        return {"error": error}, headers


def mask(key: str) -> str:
    """A key as Stripe's 401 names it: its prefix, stars, its last 4 characters."""
    parts = key.split("_")
    prefix = "_".join(parts[:2]) + "_" if len(parts) > 2 else ""
    rest = key[len(prefix) :]
    return prefix + "*" * max(len(rest) - 4, 0) + rest[-4:]


class FakeStripeEventsAPI:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._keys: list[tuple[int, str]] = []  # sorted ascending, parallel to _events
        self._events: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._undelivered: set[str] = set()
        self._faults: list[Fault] = []
        self.requests = 0
        self.pages = 0
        self.statuses: Counter[int] = Counter()
        self.queries: list[dict[str, str]] = []
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def do_DELETE(self) -> None:
                fake._handle(self)

        self._server = ServerThread(Handler)
        self.url = self._server.base_url

    # --- the fake's state ------------------------------------------------------------------------

    def add(self, *events: Mapping[str, Any] | str, delivered: bool = True) -> list[dict[str, Any]]:
        """Add events (objects, or JSON text such as `samples.stripe_event` makes)."""
        added = [dict(json.loads(e) if isinstance(e, str) else e) for e in events]
        with self._lock:
            for event in added:
                if event["id"] in self._by_id:
                    raise ValueError(f"duplicate event id {event['id']}")
                self._by_id[event["id"]] = event
                if not delivered:
                    self._undelivered.add(event["id"])
            if len(added) > 16:  # many at once: sort once
                pairs = sorted(
                    [*zip(self._keys, self._events, strict=True)]
                    + [((e["created"], e["id"]), e) for e in added],
                    key=lambda pair: pair[0],
                )
                self._keys = [k for k, _ in pairs]
                self._events = [e for _, e in pairs]
            else:
                for event in added:
                    key = (event["created"], event["id"])
                    at = bisect.bisect_left(self._keys, key)
                    self._keys.insert(at, key)
                    self._events.insert(at, event)
        return added

    def add_event(
        self,
        event_type: str = "payment_intent.succeeded",
        *,
        created: int,
        delivered: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """Build one event to the real shape (`stripe_event_shapes.event`) and add it."""
        event = stripe_event_shapes.event(event_type, created=created, **fields)
        return self.add(event, delivered=delivered)[0]

    def mark_delivered(self, *event_ids: str, delivered: bool = True) -> None:
        with self._lock:
            for event_id in event_ids:
                if event_id not in self._by_id:
                    raise KeyError(event_id)
                if delivered:
                    self._undelivered.discard(event_id)
                else:
                    self._undelivered.add(event_id)

    def is_delivered(self, event_id: str) -> bool:
        return event_id not in self._undelivered

    def undelivered_ids(self) -> set[str]:
        with self._lock:
            return set(self._undelivered)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event, newest first, as listed."""
        with self._lock:
            return [self._public(e) for e in reversed(self._events)]

    # --- faults and counters ---------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1, *, should_retry: bool | None = None) -> None:
        """The next `times` requests (after faults already queued) answer `status`."""
        with self._lock:
            self._faults.append(Fault(status, times, should_retry))

    def fail_always(self, status: int, *, should_retry: bool | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(status, None, should_retry))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests, self.pages = 0, 0
            self.statuses.clear()
            self.queries.clear()

    # --- serving ---------------------------------------------------------------------------------

    def _handle(self, handler: QuietHandler) -> None:
        split = urlsplit(handler.path)
        params = parse_qsl(split.query, keep_blank_values=True)
        with self._lock:
            self.requests += 1
            if handler.command == "GET" and split.path == "/v1/events":
                self.queries.append(dict(params))
            status, document, headers = self._answer(handler, split.path, params)
            self.statuses[status] += 1
            if status == 200 and split.path == "/v1/events":
                self.pages += 1
            body = json.dumps(document).encode()
        headers["Request-Id"] = stripe_event_shapes.stripe_id("req_")[:18]
        headers["Stripe-Version"] = stripe_event_shapes.API_VERSION
        handler.send_bytes(status, body, headers=headers)

    def _take_fault(self) -> Fault | None:
        while self._faults:
            fault = self._faults[0]
            if fault.remaining is None:
                return fault
            if fault.remaining > 0:
                fault.remaining -= 1
                return fault
            self._faults.pop(0)
        return None

    def _answer(
        self, handler: QuietHandler, path: str, params: list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        given = _api_key(handler.headers.get("Authorization", ""))
        fault = self._take_fault()
        if fault is not None:
            document, headers = fault.answer(mask(given or self.api_key))
            return fault.status, document, headers
        if given is None:
            message = (
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY')."
            )
            return (
                401,
                ApiError(401, message).document(),
                {"WWW-Authenticate": 'Bearer realm="Stripe"'},
            )
        if given != self.api_key:
            error = ApiError(401, f"Invalid API Key provided: {mask(given)}")
            return 401, error.document(), {"WWW-Authenticate": 'Bearer realm="Stripe"'}
        try:
            if handler.command == "GET" and path == "/v1/events":
                return 200, self._list(params), {}
            if handler.command == "GET" and path.startswith("/v1/events/"):
                return 200, self._public(self._known(path.rsplit("/", 1)[1], "id")), {}
            url = f"({handler.command}: {path})"
            raise ApiError(404, f"Unrecognized request URL {url}.")
        except ApiError as error:
            return error.status, error.document(), {}

    def _public(self, event: dict[str, Any]) -> dict[str, Any]:
        return event | {"pending_webhooks": int(event["id"] in self._undelivered)}

    def _known(self, event_id: str, param: str) -> dict[str, Any]:
        event = self._by_id.get(event_id)
        if event is None:
            raise ApiError(
                404 if param == "id" else 400,
                f"No such event: '{event_id}'",
                param,
                "resource_missing",
            )
        return event

    def _list(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        query = _Query.parse(pairs)
        lo, hi = query.window(self._keys)
        if query.starting_after is not None:
            event = self._known(query.starting_after, "starting_after")
            hi = min(hi, bisect.bisect_left(self._keys, (event["created"], event["id"])))
        backwards = query.ending_before is not None
        if query.ending_before is not None:
            event = self._known(query.ending_before, "ending_before")
            lo = max(lo, bisect.bisect_right(self._keys, (event["created"], event["id"])))
        page, has_more = self._page(query, lo, hi, backwards)
        return {
            "object": "list",
            "data": [self._public(e) for e in page],
            "has_more": has_more,
            "url": "/v1/events",
        }

    def _page(
        self, query: _Query, lo: int, hi: int, backwards: bool
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` matching events of [lo, hi) next to the cursor, newest first."""
        if not query.filtered:
            if backwards:
                page = self._events[lo : min(lo + query.limit, hi)]
                return page[::-1], lo + query.limit < hi
            page = self._events[max(lo, hi - query.limit) : hi]
            return page[::-1], hi - query.limit > lo
        indexes: Iterable[int] = range(lo, hi) if backwards else range(hi - 1, lo - 1, -1)
        found: list[dict[str, Any]] = []
        for i in indexes:
            if query.matches(self._events[i], self._undelivered):
                if len(found) == query.limit:
                    return (found[::-1] if backwards else found), True
                found.append(self._events[i])
        return (found[::-1] if backwards else found), False

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


def _api_key(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme == "Bearer" and value.strip():
        return value.strip()
    if scheme == "Basic":
        try:
            return base64.b64decode(value).decode().split(":", 1)[0] or None
        except ValueError:
            return None
    return None


@dataclass
class _Query:
    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None
    created: dict[str, int] | None = None
    types: list[str] | None = None
    delivery_success: bool | None = None

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]]) -> _Query:
        query = cls()
        types: list[str] = []
        for name, value in pairs:
            if name == "limit":
                query.limit = _integer(name, value)
                if not 1 <= query.limit <= 100:
                    bound = (
                        "greater than or equal to 1"
                        if query.limit < 1
                        else ("less than or equal to 100")
                    )
                    raise ApiError(400, f"This value must be {bound}.", name)
            elif name in ("starting_after", "ending_before"):
                setattr(query, name, value)
            elif name == "created":
                query.created = {"gte": _integer(name, value), "lte": _integer(name, value)}
            elif name.startswith("created[") and name[8:-1] in _WINDOW and name.endswith("]"):
                query.created = (query.created or {}) | {name[8:-1]: _integer(name, value)}
            elif (
                name == "type"
                or name == "types[]"
                or (name.startswith("types[") and name[6:-1].isdigit() and name.endswith("]"))
            ):
                types.append(value)
            elif name == "delivery_success":
                if value not in ("true", "false"):
                    raise ApiError(400, f"Invalid boolean: {value}", name)
                query.delivery_success = value == "true"
            elif not (name == "expand[]" or name.startswith("expand[")):
                raise ApiError(
                    400, f"Received unknown parameter: {name}", name, "parameter_unknown"
                )
        if len(types) > MAX_TYPES:
            raise ApiError(400, f"You may pass at most {MAX_TYPES} types.", "types")
        if query.starting_after is not None and query.ending_before is not None:
            raise ApiError(
                400, "You may only specify one of these parameters: ending_before, starting_after."
            )
        query.types = types or None
        return query

    def window(self, keys: list[tuple[int, str]]) -> tuple[int, int]:
        """The index range [lo, hi) of `keys` (sorted) inside the created window."""
        bounds = self.created or {}
        lo, hi = 0, len(keys)
        if "gte" in bounds:
            lo = max(lo, bisect.bisect_left(keys, (bounds["gte"], "")))
        if "gt" in bounds:
            lo = max(lo, bisect.bisect_left(keys, (bounds["gt"] + 1, "")))
        if "lte" in bounds:
            hi = min(hi, bisect.bisect_left(keys, (bounds["lte"] + 1, "")))
        if "lt" in bounds:
            hi = min(hi, bisect.bisect_left(keys, (bounds["lt"], "")))
        return lo, max(lo, hi)

    @property
    def filtered(self) -> bool:
        """Whether events are picked one by one (types, delivery_success), not sliced."""
        return self.types is not None or self.delivery_success is not None

    def matches(self, event: Mapping[str, Any], undelivered: set[str]) -> bool:
        if self.delivery_success is not None and self.delivery_success == (
            event["id"] in undelivered
        ):
            return False
        return self.types is None or any(_type_matches(t, event["type"]) for t in self.types)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid integer: {value}", name) from None

"""What our fakes of Stripe's API share: a server on 127.0.0.1 that checks the API key, answers
Stripe's error JSON, injects faults and counts requests (`FakeStripeAPI`, subclassed with a
`route`); objects kept sorted by (created, id) so a created window is two bisects and a page a
slice (`SortedByCreated`); the list parameters every list endpoint takes (`ListQuery`).

Faults, consumed in order by the next requests whatever they ask (`fail_next`), or on every
request (`fail_always`): 429 (with `Stripe-Should-Retry: true`/`false` or none: the SDK retries a
429 only when told true; 409 and 5xx it retries unless told false), 500, 401... Counters:
`requests` (every request), `pages` (list pages answered 200), `statuses`, `queries` (the
parameters of every list request, as sent), `paths` (list pages answered 200, by path).
"""

from __future__ import annotations

import base64
import bisect
import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import stripe_event_shapes
from ._http import QuietHandler, Served, ServerThread

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
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
)


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


def no_such(kind: str, object_id: str, param: str) -> ApiError:
    """Stripe's answer for an unknown id: 404 in the path, 400 as a parameter."""
    status = 404 if param == "id" else 400
    return ApiError(status, f"No such {kind}: '{object_id}'", param, "resource_missing")


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


def api_key(header: str) -> str | None:
    """The key of an `Authorization` header: Bearer, or Basic with the key as user."""
    scheme, _, value = header.partition(" ")
    if scheme == "Bearer" and value.strip():
        return value.strip()
    if scheme == "Basic":
        try:
            return base64.b64decode(value).decode().split(":", 1)[0] or None
        except ValueError:
            return None
    return None


def integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid integer: {value}", name) from None


def unknown(name: str) -> ApiError:
    return ApiError(400, f"Received unknown parameter: {name}", name, "parameter_unknown")


def _indexed(name: str, base: str) -> bool:
    """`base[]` or `base[N]`, as form encoding sends a list."""
    return name.startswith(base + "[") and name.endswith("]") and name[len(base) + 1 : -1].isdigit()


@dataclass
class ListQuery:
    """`limit` (default 10, 1..100), `starting_after`, `ending_before`, `created` or
    `created[gt|gte|lt|lte]`, `expand[]`: what every list endpoint reads."""

    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None
    created: dict[str, int] | None = None
    expand: list[str] = field(default_factory=list)

    def take(self, name: str, value: str) -> bool:
        """Read `name` if it is one of these parameters; False if it is not."""
        if name == "limit":
            self.limit = integer(name, value)
            if not 1 <= self.limit <= 100:
                bound = (
                    "greater than or equal to 1" if self.limit < 1 else "less than or equal to 100"
                )
                raise ApiError(400, f"This value must be {bound}.", name)
        elif name in ("starting_after", "ending_before"):
            setattr(self, name, value)
        elif name == "created":
            self.created = {"gte": integer(name, value), "lte": integer(name, value)}
        elif name.startswith("created[") and name[8:-1] in _WINDOW and name.endswith("]"):
            self.created = (self.created or {}) | {name[8:-1]: integer(name, value)}
        elif name == "expand[]" or _indexed(name, "expand"):
            self.expand.append(value)
        else:
            return False
        return True

    def check(self) -> None:
        if self.starting_after is not None and self.ending_before is not None:
            raise ApiError(
                400, "You may only specify one of these parameters: ending_before, starting_after."
            )


class SortedByCreated:
    """Objects sorted ascending by (created, id), with their ids; listed newest first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # as "No such <kind>" names it
        self.keys: list[tuple[int, str]] = []
        self.items: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}

    def add(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            if obj["id"] in self.by_id:
                raise ValueError(f"duplicate {self.kind} id {obj['id']}")
            self.by_id[obj["id"]] = obj
        if len(objects) > 16:  # many at once: sort once
            pairs = sorted(
                [*zip(self.keys, self.items, strict=True)]
                + [((o["created"], o["id"]), o) for o in objects],
                key=lambda pair: pair[0],
            )
            self.keys = [k for k, _ in pairs]
            self.items = [o for _, o in pairs]
            return
        for obj in objects:
            key = (obj["created"], obj["id"])
            at = bisect.bisect_left(self.keys, key)
            self.keys.insert(at, key)
            self.items.insert(at, obj)

    def known(self, object_id: str, param: str) -> dict[str, Any]:
        obj = self.by_id.get(object_id)
        if obj is None:
            raise no_such(self.kind, object_id, param)
        return obj

    def bounds(self, query: ListQuery) -> tuple[int, int]:
        """The index range [lo, hi) inside the created window and past the cursor."""
        window = query.created or {}
        lo, hi = 0, len(self.keys)
        if "gte" in window:
            lo = max(lo, bisect.bisect_left(self.keys, (window["gte"], "")))
        if "gt" in window:
            lo = max(lo, bisect.bisect_left(self.keys, (window["gt"] + 1, "")))
        if "lte" in window:
            hi = min(hi, bisect.bisect_left(self.keys, (window["lte"] + 1, "")))
        if "lt" in window:
            hi = min(hi, bisect.bisect_left(self.keys, (window["lt"], "")))
        if query.starting_after is not None:
            obj = self.known(query.starting_after, "starting_after")
            hi = min(hi, bisect.bisect_left(self.keys, (obj["created"], obj["id"])))
        if query.ending_before is not None:
            obj = self.known(query.ending_before, "ending_before")
            lo = max(lo, bisect.bisect_right(self.keys, (obj["created"], obj["id"])))
        return lo, max(lo, hi)

    def page(self, query: ListQuery) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` objects next to the cursor, newest first, and whether more remain."""
        lo, hi = self.bounds(query)
        if query.ending_before is not None:
            page = self.items[lo : min(lo + query.limit, hi)]
            return page[::-1], lo + query.limit < hi
        return self.items[max(lo, hi - query.limit) : hi][::-1], hi - query.limit > lo

    def newest_first(self, lo: int, hi: int, backwards: bool) -> Iterable[int]:
        return range(lo, hi) if backwards else range(hi - 1, lo - 1, -1)


class FakeStripeAPI(Served):
    """A fake Stripe API served while entered; a subclass answers `route` for an authenticated
    request (raising `ApiError` for a 4xx) and names its list endpoints in `list_paths`."""

    list_paths: tuple[str, ...] = ()

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.requests = 0
        self.pages = 0
        self.paths: Counter[str] = Counter()
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

    def route(self, command: str, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        raise ApiError(404, f"Unrecognized request URL ({command}: {path}).")

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
            self.paths.clear()
            self.statuses.clear()
            self.queries.clear()

    # --- serving ---------------------------------------------------------------------------------

    def _handle(self, handler: QuietHandler) -> None:
        split = urlsplit(handler.path)
        params = parse_qsl(split.query, keep_blank_values=True)
        listing = handler.command == "GET" and split.path in self.list_paths
        with self._lock:
            self.requests += 1
            if listing:
                self.queries.append(dict(params))
            status, document, headers = self._answer(handler, split.path, params)
            self.statuses[status] += 1
            if status == 200 and listing:
                self.pages += 1
                self.paths[split.path] += 1
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
    ) -> tuple[int, Mapping[str, Any], dict[str, str]]:
        given = api_key(handler.headers.get("Authorization", ""))
        fault = self._take_fault()
        if fault is not None:
            document, headers = fault.answer(mask(given or self.api_key))
            return fault.status, document, headers
        if given is None or given != self.api_key:
            message = _NO_KEY if given is None else f"Invalid API Key provided: {mask(given)}"
            error = ApiError(401, message)
            return 401, error.document(), {"WWW-Authenticate": 'Bearer realm="Stripe"'}
        try:
            return 200, self.route(handler.command, path, params), {}
        except ApiError as error:
            return error.status, error.document(), {}

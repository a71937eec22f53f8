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
slice, so 10,000 events page fast. Events may be added while it serves. Faults (`fail_next`,
`fail_always`) and counters (`requests`, `pages`, `statuses`, `queries`): `_stripe_api`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import stripe_event_shapes
from ._stripe_api import ApiError, FakeStripeAPI, ListQuery, SortedByCreated, mask, unknown

__all__ = ["API_KEY", "MAX_TYPES", "ApiError", "FakeStripeEventsAPI", "mask"]

API_KEY = "sk_test_fake_events_api_4242"
MAX_TYPES = 20


class FakeStripeEventsAPI(FakeStripeAPI):
    list_paths = ("/v1/events",)

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key)
        self._store = SortedByCreated("event")
        self._undelivered: set[str] = set()

    # --- the fake's state ------------------------------------------------------------------------

    def add(self, *events: Mapping[str, Any] | str, delivered: bool = True) -> list[dict[str, Any]]:
        """Add events (objects, or JSON text such as `samples.stripe_event` makes)."""
        added = [dict(json.loads(e) if isinstance(e, str) else e) for e in events]
        with self._lock:
            self._store.add(added)
            if not delivered:
                self._undelivered.update(event["id"] for event in added)
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
                if event_id not in self._store.by_id:
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
            return [self._public(e) for e in reversed(self._store.items)]

    # --- serving ---------------------------------------------------------------------------------

    def route(self, command: str, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        if command == "GET" and path == "/v1/events":
            return self._list(params)
        if command == "GET" and path.startswith("/v1/events/"):
            return self._public(self._store.known(path.rsplit("/", 1)[1], "id"))
        return super().route(command, path, params)

    def _public(self, event: dict[str, Any]) -> dict[str, Any]:
        return event | {"pending_webhooks": int(event["id"] in self._undelivered)}

    def _list(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        query = _Query.parse(pairs)
        if query.filtered:
            page, has_more = self._filtered_page(query)
        else:
            page, has_more = self._store.page(query)
        return {
            "object": "list",
            "data": [self._public(e) for e in page],
            "has_more": has_more,
            "url": "/v1/events",
        }

    def _filtered_page(self, query: _Query) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` matching events next to the cursor, newest first, picked one by one."""
        lo, hi = self._store.bounds(query)
        backwards = query.ending_before is not None
        found: list[dict[str, Any]] = []
        for i in self._store.newest_first(lo, hi, backwards):
            if query.matches(self._store.items[i], self._undelivered):
                if len(found) == query.limit:
                    return (found[::-1] if backwards else found), True
                found.append(self._store.items[i])
        return (found[::-1] if backwards else found), False


@dataclass
class _Query(ListQuery):
    types: list[str] | None = None
    delivery_success: bool | None = None

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]]) -> _Query:
        query = cls()
        types: list[str] = []
        for name, value in pairs:
            if query.take(name, value):
                continue
            if (
                name == "type"
                or name == "types[]"
                or (name.startswith("types[") and name[6:-1].isdigit() and name.endswith("]"))
            ):
                types.append(value)
            elif name == "delivery_success":
                if value not in ("true", "false"):
                    raise ApiError(400, f"Invalid boolean: {value}", name)
                query.delivery_success = value == "true"
            else:
                raise unknown(name)
        if len(types) > MAX_TYPES:
            raise ApiError(400, f"You may pass at most {MAX_TYPES} types.", "types")
        query.check()
        query.types = types or None
        return query

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

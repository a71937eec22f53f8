"""Stripe's API, through the official SDK: the one module that calls it.

`StripeEvents` lists events (`GET /v1/events`) created in a window with the SDK's
`StripeClient(key, base_addresses={"api": PAYMENTS_STRIPE_API_BASE})`, a page of 100 at a time,
each next page `starting_after` the last id of the one before (what the SDK's own auto-paging
does). The pages are asked with `StripeClient.raw_request`, not `v1.events.list`: the same request,
the same retries and the same error classes, without building an `Event` object per listed event
that we would only turn back into JSON. Those objects cost ~0.55 ms of CPU per event, which alone
held a 10,000-event listing to ~1,500 events/s (docs/PERFORMANCE.md, "Reconciliation").

The SDK retries what Stripe marks retryable (connection errors, 409, 5xx, and a 429 that carries
`Stripe-Should-Retry: true`) with its exponential backoff, `max_network_retries` times. A 429 the
SDK does not retry (a plain rate limit) is retried here, with the same kind of backoff, a bounded
number of times: a reconciliation is a background job and can wait for the rate limit to pass.

Every failure becomes `StripeApiError`, one sentence that names what to check, and never contains
the API key (Stripe's own messages carry a masked form of it; the text is scrubbed anyway).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import requests
import stripe

PAGE_SIZE = 100
# The SDK's retries (connection errors, 409, 5xx, 429 marked retryable) per request.
NETWORK_RETRIES = 3
# Our own retries of a 429 the SDK does not retry, per request, and the longest wait between two.
RATE_LIMIT_RETRIES = 5
MAX_RATE_LIMIT_WAIT = 8.0
TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


class StripeApiError(Exception):
    """Stripe's API could not be asked, or refused; the message says why (never the key)."""


class StripeApi:
    """A `StripeClient` for one key and API base, with our error wording. Its HTTP session is
    closed by `close()` (or leaving a `with` block)."""

    def __init__(
        self,
        api_key: str,
        api_base: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        network_retries: int = NETWORK_RETRIES,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise StripeApiError("STRIPE_API_KEY is not set: a reconciliation needs a key")
        self._key = api_key
        self.api_base = api_base
        self._network_retries = network_retries
        self._rate_limit_retries = rate_limit_retries
        self._sleep = sleep
        self._session = requests.Session()
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=network_retries,
            http_client=stripe.RequestsClient(timeout=timeout, session=self._session),
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, request: Callable[[], T]) -> T:
        """`request()` (one SDK call), a plain 429 retried with backoff; failures reworded."""
        for attempt in range(self._rate_limit_retries + 1):
            try:
                return request()
            except stripe.RateLimitError:
                if attempt == self._rate_limit_retries:
                    raise StripeApiError(
                        f"Stripe's API kept answering 429 (rate limited) at {self.api_base} "
                        f"after {self._rate_limit_retries} retries: try again later"
                    ) from None
                wait = min(MAX_RATE_LIMIT_WAIT, 0.5 * 2**attempt)
                self._sleep(wait * random.uniform(0.5, 1.0))
            except stripe.StripeError as exc:
                raise StripeApiError(self._explain(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _explain(self, exc: stripe.StripeError) -> str:
        status = exc.http_status
        at = f"at {self.api_base}"
        if isinstance(exc, stripe.AuthenticationError):
            text = f"Stripe's API refused STRIPE_API_KEY {at} (HTTP {status}): check the key"
        elif isinstance(exc, stripe.PermissionError):
            text = (
                f"STRIPE_API_KEY may not read this {at} (HTTP {status}): give the restricted "
                "key read access to Events, PaymentIntents and Charges"
            )
        elif isinstance(exc, stripe.APIConnectionError):
            text = (
                f"Stripe's API is unreachable {at} "
                f"(no answer after {self._network_retries} retries)"
            )
        elif status is not None and status >= 500:
            text = (
                f"Stripe's API answered HTTP {status} {at} "
                f"after {self._network_retries} retries: try again later"
            )
        else:
            detail = (exc.user_message or str(exc) or type(exc).__name__).strip()
            text = f"Stripe's API refused the request {at} (HTTP {status}): {detail}"
        return self.scrub(" ".join(text.split()))

    def scrub(self, text: str) -> str:
        """`text` without the API key in it."""
        return text.replace(self._key, "<STRIPE_API_KEY>") if self._key else text


def list_pages(
    api: StripeApi, path: str, *, created_gte: int, created_lte: int, page_size: int, **extra: Any
) -> Iterator[list[dict[str, Any]]]:
    """Each page of the list at `path` (objects `created` in the window, the API's JSON with its
    key order, in the API's order), each next page `starting_after` the last id of the one
    before; stops after the page that says `has_more: false`. Raises `StripeApiError`."""
    params: dict[str, Any] = {
        "created": {"gte": created_gte, "lte": created_lte},
        "limit": page_size,
        **extra,
    }
    while True:
        response = api.call(functools.partial(api.client.raw_request, "get", path, **params))
        items, has_more = _page_of(response, path)
        yield items
        if not has_more or not items:
            return
        params["starting_after"] = items[-1]["id"]


class _Lists:
    """One Stripe list endpoint family, read a window at a time, `page_size` objects a page."""

    def __init__(self, api: StripeApi, *, page_size: int = PAGE_SIZE) -> None:
        self.api = api
        self.page_size = page_size

    def _pages(
        self, path: str, *, created_gte: int, created_lte: int, **extra: Any
    ) -> Iterator[list[dict[str, Any]]]:
        return list_pages(
            self.api,
            path,
            created_gte=created_gte,
            created_lte=created_lte,
            page_size=self.page_size,
            **extra,
        )


class StripeEvents(_Lists):
    """Pages of Stripe events created in a window, as the API returned them."""

    def pages(self, *, created_gte: int, created_lte: int) -> Iterator[list[dict[str, Any]]]:
        return self._pages("/v1/events", created_gte=created_gte, created_lte=created_lte)


class StripePayments(_Lists):
    """Pages of Stripe's payments created in a window: PaymentIntents (their latest charge
    expanded, for its refunds) and charges (the legacy ones have no PaymentIntent)."""

    def payment_intents(
        self, *, created_gte: int, created_lte: int
    ) -> Iterator[list[dict[str, Any]]]:
        return self._pages(
            "/v1/payment_intents",
            created_gte=created_gte,
            created_lte=created_lte,
            expand=["data.latest_charge"],
        )

    def charges(self, *, created_gte: int, created_lte: int) -> Iterator[list[dict[str, Any]]]:
        return self._pages("/v1/charges", created_gte=created_gte, created_lte=created_lte)


def _page_of(response: Any, path: str) -> tuple[list[dict[str, Any]], bool]:
    """A list page's objects and `has_more`; `StripeApiError` if it is not a list."""
    document = getattr(response, "data", None)
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and isinstance(item.get("id"), str) for item in data
    ):
        raise StripeApiError(f"Stripe's API answered GET {path} with something not a list")
    return data, bool(document.get("has_more"))  # type: ignore[union-attr]

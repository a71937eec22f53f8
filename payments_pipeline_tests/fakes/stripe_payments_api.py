"""A fake of Stripe's PaymentIntents and Charges on 127.0.0.1, for the drift between our `payments`
and Stripe's: `GET /v1/payment_intents`, `GET /v1/charges` and `GET /v1/<either>/<id>`.

    with FakeStripePaymentsAPI() as api:
        pi = api.add_payment_intent(created=t, amount=1000)
        api.refund(pi["id"], 300)
        event = api.event_for(pi["id"], "charge.refunded")  # sign it, POST it to the receiver
        client = stripe.StripeClient(api.api_key, base_addresses={"api": api.url})

Listing as Stripe does (API 2024-06-20): `limit` (default 10, 1..100), `starting_after`,
`ending_before`, `created` or `created[gt|gte|lt|lte]`, `expand[]`; newest first (`created`
descending, ties by id descending); `{"object": "list", "data", "has_more", "url"}`. Any other
parameter is a 400 (Stripe's own `customer`, or `payment_intent` on charges, included). A
PaymentIntent's `latest_charge` is the charge's id, or the whole charge with
`expand[]=data.latest_charge` (`latest_charge` on one PaymentIntent); a charge's `payment_intent`
likewise with `data.payment_intent`. Any other expansion is a 400.

The objects have the shapes of `stripe_event_shapes` (the recorded payloads), which also makes
their events: `event_for` is the event Stripe would send about an object as it is now. As in the
2024 API, a PaymentIntent carries no refunds: only its charge's `amount_refunded` and
`refunded` say them. Objects live in lists sorted by (created, id) (`_stripe_api.SortedByCreated`):
a day's page is two bisects and a slice. Auth, errors, faults (`fail_next`, `fail_always`) and
counters (`requests`, `pages`, `paths`, `statuses`, `queries`): `_stripe_api`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from . import stripe_event_shapes
from ._stripe_api import ApiError, FakeStripeAPI, ListQuery, SortedByCreated, unknown

API_KEY = "sk_test_fake_payments_api_4242"
_PATHS = {"/v1/payment_intents": "payment_intent", "/v1/charges": "charge"}
_EXPANDABLE = {"payment_intent": "latest_charge", "charge": "payment_intent"}
# a PaymentIntent's status -> its latest charge's status (no entry: no charge, unless `failed`)
_CHARGE_STATUS = {
    "succeeded": "succeeded",
    "processing": "pending",
    "requires_capture": "succeeded",
}
_DECLINED = {
    "failure_code": "card_declined",
    "failure_message": "Your card was declined.",
    "outcome": {
        "network_status": "declined_by_network",
        "reason": "generic_decline",
        "risk_level": "normal",
        "seller_message": "The bank did not return any further details with this decline.",
        "type": "issuer_declined",
    },
}


@functools.cache
def _template(event_type: str) -> Mapping[str, Any]:
    """`data.object` of a `stripe_event_shapes` event: the fields shared by every such object."""
    return stripe_event_shapes.event(event_type, created=0)["data"]["object"]


def _declined(charge_id: str) -> dict[str, Any]:
    """The `last_payment_error` of a PaymentIntent whose charge was declined."""
    error = _template("payment_intent.payment_failed")["last_payment_error"]
    return dict(error) | {"charge": charge_id}


def _shape(event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A new object: the template, then `fields`, keys sorted as the API's JSON has them."""
    return dict(sorted((dict(_template(event_type)) | dict(fields)).items()))


class FakeStripePaymentsAPI(FakeStripeAPI):
    list_paths = tuple(_PATHS)

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key)
        self._stores = {kind: SortedByCreated(kind) for kind in ("payment_intent", "charge")}

    # --- the fake's state ------------------------------------------------------------------------

    def add_payment_intent(
        self,
        *,
        created: int,
        amount: int,
        currency: str = "eur",
        status: str = "succeeded",
        livemode: bool = False,
        amount_refunded: int = 0,
        failed: bool = False,
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        charge_created: int | None = None,
    ) -> dict[str, Any]:
        """A PaymentIntent and its latest charge (`charge_created`, default `created`): succeeded
        for `succeeded`/`requires_capture` (uncaptured), pending for `processing`, declined when
        `failed` (then `last_payment_error` names it; status `requires_payment_method` unless
        `canceled`); other statuses have none. Returns a copy of the PaymentIntent."""
        pi_id = id or stripe_event_shapes.stripe_id("pi_")
        charge_id = "ch_" + pi_id.removeprefix("pi_")
        charge_status = "failed" if failed else _CHARGE_STATUS.get(status)
        succeeded = status == "succeeded"
        event_type = {
            "succeeded": "payment_intent.succeeded",
            "canceled": "payment_intent.canceled",
        }.get(status, "payment_intent.payment_failed" if failed else "payment_intent.created")
        pi = _shape(
            event_type,
            {
                "id": pi_id,
                "amount": amount,
                "amount_capturable": amount if status == "requires_capture" else 0,
                "amount_received": amount if succeeded else 0,
                "created": created,
                "currency": currency,
                "latest_charge": charge_id if charge_status else None,
                "livemode": livemode,
                "metadata": dict(metadata or {}),
                "canceled_at": created if status == "canceled" else None,
                "client_secret": f"{pi_id}_secret_{stripe_event_shapes.stripe_id('')[:25]}",
                "last_payment_error": _declined(charge_id) if failed else None,
                "payment_method": "pm_" + pi_id.removeprefix("pi_") if charge_status else None,
                "status": status,
            },
        )
        with self._lock:
            if charge_status:
                self._add_charge(
                    charge_id,
                    pi_id,
                    created=created if charge_created is None else charge_created,
                    amount=amount,
                    currency=currency,
                    status=charge_status,
                    amount_refunded=amount_refunded,
                    livemode=livemode,
                    captured=status != "requires_capture",
                )
            elif amount_refunded:
                raise ValueError(f"a {status} PaymentIntent has no charge to refund")
            self._stores["payment_intent"].add([pi])
            return copy.deepcopy(pi)

    def add_charge(
        self,
        *,
        created: int,
        amount: int,
        currency: str = "eur",
        status: str = "succeeded",
        amount_refunded: int = 0,
        livemode: bool = False,
        id: str | None = None,
    ) -> dict[str, Any]:
        """A legacy Charges-API charge (`payment_intent: null`); returns a copy."""
        with self._lock:
            charge = self._add_charge(
                id or stripe_event_shapes.stripe_id("ch_"),
                None,
                created=created,
                amount=amount,
                currency=currency,
                status=status,
                amount_refunded=amount_refunded,
                livemode=livemode,
                captured=True,
            )
            return copy.deepcopy(charge)

    def refund(self, pi_or_charge_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund `amount` (default: what is left) of a charge, or of a PaymentIntent's latest
        charge: its `amount_refunded` grows, `refunded` once whole. Returns a copy of it."""
        with self._lock:
            charge = self._charge_of(pi_or_charge_id)
            left = charge["amount_captured"] - charge["amount_refunded"]
            amount = left if amount is None else amount
            if charge["status"] != "succeeded" or not 0 < amount <= left:
                raise ValueError(f"cannot refund {amount} of {charge['id']} ({left} refundable)")
            charge["amount_refunded"] += amount
            charge["refunded"] = amount == left
            return copy.deepcopy(charge)

    def payment_intent(self, pi_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._stores["payment_intent"].known(pi_id, "id"))

    def charge(self, charge_id: str) -> dict[str, Any]:
        """A charge by its id, or a PaymentIntent's latest charge by the PaymentIntent's id."""
        with self._lock:
            return copy.deepcopy(self._charge_of(charge_id))

    def event_for(
        self,
        obj: Mapping[str, Any] | str,
        event_type: str,
        *,
        created: int | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """The event (as `stripe_event_shapes.event` shapes it) of `event_type` about the object
        (or id) as it is now: `payment_intent.*` of a PaymentIntent, `charge.*` of a charge (or a
        PaymentIntent's latest charge). `created` defaults to the object's."""
        object_id = obj if isinstance(obj, str) else obj["id"]
        kind = event_type.split(".")[0]
        if kind not in _EXPANDABLE:
            raise ValueError(f"no object of ours for {event_type}")
        get = self.payment_intent if kind == "payment_intent" else self.charge
        current = get(object_id)
        return stripe_event_shapes.event(
            event_type,
            created=current["created"] if created is None else created,
            event_id=event_id,
            reference=current.get("payment_intent") or current["id"],
            object_id=current["id"],
            amount=current["amount"],
            currency=current["currency"],
            livemode=current["livemode"],
            object_fields=current,
        )

    # --- serving ---------------------------------------------------------------------------------

    def route(self, command: str, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        base, _, object_id = path.rpartition("/")
        if command == "GET" and path in _PATHS:
            return self._list(_PATHS[path], path, params)
        if command == "GET" and base in _PATHS and object_id:
            kind = _PATHS[base]
            query = _parse(params, kind, "")
            return self._public(kind, self._stores[kind].known(object_id, "id"), query.expand)
        return super().route(command, path, params)

    def _list(self, kind: str, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        query = _parse(params, kind, "data.")
        page, has_more = self._stores[kind].page(query)
        expand = [e.removeprefix("data.") for e in query.expand]
        return {
            "object": "list",
            "data": [self._public(kind, obj, expand) for obj in page],
            "has_more": has_more,
            "url": path,
        }

    def _public(self, kind: str, obj: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        link = _EXPANDABLE[kind]
        if link not in expand or obj[link] is None:
            return obj
        other = "charge" if kind == "payment_intent" else "payment_intent"
        return obj | {link: self._stores[other].by_id[obj[link]]}

    def _charge_of(self, object_id: str) -> dict[str, Any]:
        if object_id.startswith("pi_"):
            pi = self._stores["payment_intent"].known(object_id, "id")
            if pi["latest_charge"] is None:
                raise ValueError(f"{object_id} has no charge")
            object_id = pi["latest_charge"]
        return self._stores["charge"].known(object_id, "id")

    def _add_charge(
        self,
        charge_id: str,
        pi_id: str | None,
        *,
        amount_refunded: int,
        captured: bool,
        status: str,
        **fields: Any,
    ) -> dict[str, Any]:
        amount_captured = fields["amount"] if status == "succeeded" and captured else 0
        if not 0 <= amount_refunded <= amount_captured:
            raise ValueError(f"cannot refund {amount_refunded} of {amount_captured} captured")
        charge = _shape(
            "charge.refunded",
            fields
            | {
                "id": charge_id,
                "amount_captured": amount_captured,
                "amount_refunded": amount_refunded,
                "balance_transaction": stripe_event_shapes.stripe_id("txn_") if captured else None,
                "captured": captured and status == "succeeded",
                "paid": status == "succeeded",
                "payment_intent": pi_id,
                "payment_method": stripe_event_shapes.stripe_id("pm_" if pi_id else "card_"),
                "receipt_url": f"https://pay.stripe.com/receipts/payment/{charge_id}",
                "refunded": amount_captured > 0 and amount_refunded == amount_captured,
                "status": status,
            }
            | (_DECLINED if status == "failed" else {}),
        )
        self._stores["charge"].add([charge])
        return charge


def _parse(pairs: list[tuple[str, str]], kind: str, prefix: str) -> ListQuery:
    """The list parameters (only `expand[]` for one object); a 400 for any other one."""
    query = ListQuery()
    for name, value in pairs:
        if not query.take(name, value) or (not prefix and not name.startswith("expand")):
            raise unknown(name)
    for path in query.expand:
        if path != prefix + _EXPANDABLE[kind]:
            raise ApiError(400, f"This property cannot be expanded ({path}).", "expand")
    query.check()
    return query

"""Payment stories: the events one payment goes through, as the providers would deliver them.

A story's final status does not depend on the order its events arrive in (`payment_state`: every
allowed change moves forward in rank, so the highest ranked status wins; a success outranks an
earlier cancel). The verifier re-checks that for every story by replaying it in every order.
Stripe `created` grows along a story; Monetbil sends no timestamp and each notification is its
own transaction (`transaction_id`) for the same `payment_ref`, keyed `<transaction_id>:<status>`.

Every payload carries the run's marker (a customer e-mail) so the log check can prove that no
payload reached a log line.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from payments_pipeline.models import PaymentUpdate, Provider
from payments_pipeline.providers import monetbil, samples, stripe

STRIPE_STORIES: dict[str, tuple[str, ...]] = {
    "succeeded": ("payment_intent.succeeded",),
    "failed_then_succeeded": ("payment_intent.payment_failed", "payment_intent.succeeded"),
    "succeeded_then_refunded": ("payment_intent.succeeded", "charge.refunded"),
    "checkout_then_refunded": ("checkout.session.completed", "charge.refunded"),
    "failed": ("payment_intent.payment_failed",),
    "canceled": ("payment_intent.canceled",),
    "failed_then_canceled": ("payment_intent.payment_failed", "payment_intent.canceled"),
    "canceled_then_succeeded": ("payment_intent.canceled", "payment_intent.succeeded"),
}
MONETBIL_STORIES: dict[str, tuple[str, ...]] = {
    "success": ("1",),
    "failed_then_success": ("0", "1"),
    "failed": ("0",),
    "cancelled": ("-1",),
    "failed_then_cancelled": ("0", "-1"),
    "cancelled_then_success": ("-1", "1"),
}
_TEST_MODE = {"1": "7", "0": "8", "-1": "9"}


@dataclass(frozen=True)
class SoakEvent:
    """One provider event: its key, its body (Stripe JSON, or Monetbil's signed form) and what it
    says about its payment (parsed by the provider module, like the handler will)."""

    provider: Provider
    event_id: str
    event_type: str
    body: str
    story: int
    index: int
    update: PaymentUpdate | None
    forged: bool = False
    fields: dict[str, str] | None = None  # Monetbil: the signed fields (for the query string)

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider.value, self.event_id)


@dataclass
class Story:
    number: int
    provider: Provider
    kind: str
    reference: str
    amount: int
    events: list[SoakEvent] = field(default_factory=list)
    send_order: list[int] = field(default_factory=list)  # event indices, first delivery order

    @property
    def out_of_order(self) -> bool:
        return self.send_order != sorted(self.send_order)


class StoryFactory:
    """Makes stories and forged deliveries for one run (ids carry the run's token)."""

    def __init__(
        self,
        rng: random.Random,
        *,
        stripe_secret: str,
        monetbil_secret: str,
        out_of_order_chance: float,
    ) -> None:
        self.rng = rng
        self.stripe_secret = stripe_secret
        self.monetbil_secret = monetbil_secret
        self.out_of_order_chance = out_of_order_chance
        self.token = secrets.token_hex(4)
        self.marker = f"soakpayload{self.token}"  # in every payload; must never reach a log
        self._n = 0
        self._forged = 0
        self._created = int(time.time()) - 3600

    def story(self) -> Story:
        self._n += 1
        n = self._n
        if self.rng.random() < 0.5:
            kind = self.rng.choice(sorted(STRIPE_STORIES))
            story = Story(n, Provider.STRIPE, kind, f"pi_soak{self.token}_{n}", self._amount())
            created = self._created + n
            for i, event_type in enumerate(STRIPE_STORIES[kind]):
                created += self.rng.randint(1, 60)
                event_id = f"evt_soak{self.token}_{n}_{i}"
                body = self._stripe_body(story, event_id, event_type, created)
                story.events.append(self._event(Provider.STRIPE, event_type, body, story, i))
        else:
            kind = self.rng.choice(sorted(MONETBIL_STORIES))
            story = Story(n, Provider.MONETBIL, kind, f"order-{self.token}-{n}", self._amount())
            test_mode = self.rng.random() < 0.1
            for i, status in enumerate(MONETBIL_STORIES[kind]):
                code = _TEST_MODE[status] if test_mode else status
                tx = f"TX{self.token}x{n}x{i}"
                fields = self._monetbil_fields(story, tx, code, self.monetbil_secret)
                story.events.append(self._monetbil_event(story, i, fields))
        story.send_order = list(range(len(story.events)))
        if len(story.events) > 1 and self.rng.random() < self.out_of_order_chance:
            story.send_order.reverse()  # e.g. the refund before its success
        return story

    def forged(self) -> SoakEvent:
        """A delivery signed with the wrong secret, under an id no real delivery uses: it must be
        refused (400) and leave no row."""
        self._forged += 1
        n = self._forged
        story = Story(-n, Provider.STRIPE, "forged", f"pi_forged{self.token}_{n}", 100)
        if self.rng.random() < 0.5:
            event_id, event_type = f"evt_forged{self.token}_{n}", "payment_intent.succeeded"
            body = self._stripe_body(story, event_id, event_type, self._created)
            return SoakEvent(Provider.STRIPE, event_id, event_type, body, -n, 0, None, True)
        story.provider, story.reference = Provider.MONETBIL, f"forged-{self.token}-{n}"
        wrong = "not-the-" + self.monetbil_secret
        fields = self._monetbil_fields(story, f"FORGED{self.token}x{n}", "1", wrong)
        return SoakEvent(
            Provider.MONETBIL,
            monetbil.event_id_for(fields),
            monetbil.SUCCESS,
            urlencode(fields),
            -n,
            0,
            None,
            True,
            fields,
        )

    def _amount(self) -> int:
        return self.rng.randint(100, 500_000)

    def _event(
        self, provider: Provider, event_type: str, body: str, story: Story, index: int
    ) -> SoakEvent:
        header = stripe.parse_event(body)
        update = stripe.payment_update(event_type, body)
        return SoakEvent(provider, header.id, event_type, body, story.number, index, update)

    def _stripe_body(self, story: Story, event_id: str, event_type: str, created: int) -> str:
        n, email = abs(story.number), f"{self.marker}-{story.number}@x.invalid"
        extra: dict[str, object] = {"metadata": {"customer_email": email}}
        object_id = None
        if event_type == "charge.refunded":
            object_id = f"ch_soak{self.token}_{n}"
        elif event_type == "checkout.session.completed":
            object_id = f"cs_soak{self.token}_{n}"
            extra["customer_details"] = {"email": email}
        return samples.stripe_event(
            event_id,
            event_type,
            reference=story.reference,
            amount=story.amount,
            currency="eur" if n % 2 else "usd",
            created=created,
            object_id=object_id,
            object_fields=extra,
            api_version="2024-06-20",
        )

    def _monetbil_fields(self, story: Story, tx: str, status: str, secret: str) -> dict[str, str]:
        fields = {
            "service": f"svc_{self.token}",
            "transaction_id": tx,
            "transaction_uuid": f"uuid-{tx}",
            "msisdn": f"2376{self.rng.randint(10_000_000, 99_999_999)}",
            "amount": str(story.amount),
            "fee": str(story.amount // 100),
            "status": status,
            "message": "Paiement réussi !" if status in {"1", "7"} else "Échec & annulé",
            "currency": "XAF",
            "item_ref": f"item-{story.number}",
            "payment_ref": story.reference,
            "user": str(story.number),
            "email": f"{self.marker}-{story.number}@x.invalid",
        }
        return monetbil.sign_fields(fields, secret)

    def _monetbil_event(self, story: Story, index: int, fields: dict[str, str]) -> SoakEvent:
        body = urlencode(fields)
        event_type = monetbil.event_type_for(fields)
        update = monetbil.payment_update(event_type, body)
        key = monetbil.event_id_for(fields)  # `<transaction_id>:<status>`
        return SoakEvent(
            Provider.MONETBIL, key, event_type, body, story.number, index, update, False, fields
        )

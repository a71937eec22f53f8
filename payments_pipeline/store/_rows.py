"""Frozen rows (`models`) from result rows: each model's fields read by column name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from ..models import EventRef, EventStatus, Payment, PaymentStatus, Provider, WebhookEvent
from .schema import E

M = TypeVar("M")

REF_COLUMNS = (E.id, E.provider, E.provider_event_id, E.event_type)
PROVIDERS = {p.value: p for p in Provider}


_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def from_row(model: type[M], row: Any, **convert: Callable[[Any], Any]) -> M:
    """`model` from the columns of `row` named like its fields (others are ignored), each
    passed through `convert[field]` where given (the enums)."""
    names = _FIELDS.get(model)
    if names is None:
        names = _FIELDS[model] = tuple(f.name for f in dataclasses.fields(model))  # type: ignore[arg-type]
    values = row._mapping
    return model(**{f: convert[f](values[f]) if f in convert else values[f] for f in names})


def event_from_row(row: Any) -> WebhookEvent:
    return from_row(WebhookEvent, row, provider=Provider, status=EventStatus)


def ref_from_row(row: Any) -> EventRef:
    return from_row(EventRef, row, provider=Provider)


def payment_from_row(row: Any) -> Payment:
    return from_row(Payment, row, provider=Provider, status=PaymentStatus)

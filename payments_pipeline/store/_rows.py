"""Frozen rows (`models`) from result rows, for the modules that read events."""

from __future__ import annotations

from typing import Any

from ..models import (
    EventRef,
    EventStatus,
    Provider,
    WebhookEvent,
)
from .schema import E


def event_from_row(row: Any) -> WebhookEvent:
    return WebhookEvent(
        id=row.id,
        provider=Provider(row.provider),
        provider_event_id=row.provider_event_id,
        event_type=row.event_type,
        status=EventStatus(row.status),
        payload=row.payload,
        attempts=row.attempts,
        attempts_base=row.attempts_base,
        dispatched_at=row.dispatched_at,
        processing_started_at=row.processing_started_at,
        processed_at=row.processed_at,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def ref_from_row(row: Any) -> EventRef:
    return EventRef(
        id=row.id,
        provider=Provider(row.provider),
        provider_event_id=row.provider_event_id,
        event_type=row.event_type,
    )


REF_COLUMNS = (E.id, E.provider, E.provider_event_id, E.event_type)
PROVIDERS = {p.value: p for p in Provider}

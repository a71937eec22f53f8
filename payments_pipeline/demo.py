"""`payments-pipeline demo`: a local SQLite database holding stuck events of both providers.

It seeds one event per stuck reason and provider, a fresh in-flight event the sweep must leave
alone, an already-processed one, and one stuck event older than the 7-day window (counted as
`expired`, never touched), so a first sweep shows every line of its summary.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from . import migrations, store
from .models import EventStatus, Provider, utcnow
from .providers import samples

DEMO_DIR = "demo"
DEMO_DB = "payments.sqlite3"


def demo_rows(now: dt.datetime) -> list[dict[str, Any]]:
    def state(
        status: EventStatus = EventStatus.RECEIVED,
        attempts: int = 0,
        *,
        last_error: str | None = None,
        **minutes_ago: float,
    ) -> dict[str, Any]:
        """A row's state columns; its timestamp columns are given in minutes before `now`."""
        times = {column: now - dt.timedelta(minutes=m) for column, m in minutes_ago.items()}
        return {"status": status.value, "attempts": attempts, "last_error": last_error, **times}

    created = int((now - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC).timestamp())
    rows: list[dict[str, Any]] = []
    # (suffix, state columns): one of each sweep reason, then what must not move
    specs: list[tuple[str, dict[str, Any]]] = [
        ("null", state(created_at=30)),
        ("lost", state(dispatched_at=25, created_at=26)),
        (
            "failed",
            state(
                EventStatus.FAILED,
                1,
                last_error="TimeoutError: upstream",
                dispatched_at=40,
                next_attempt_at=30,
                created_at=41,
            ),
        ),
        (
            "stalled",
            state(
                EventStatus.PROCESSING,
                1,
                dispatched_at=120,
                processing_started_at=120,
                created_at=120,
            ),
        ),
        ("fresh", state(dispatched_at=1, created_at=1)),
        ("done", state(EventStatus.PROCESSED, 1, dispatched_at=50, processed_at=49, created_at=50)),
        ("ancient", state(created_at=9 * 24 * 60)),
    ]
    for n, (suffix, columns) in enumerate(specs, start=1):
        ref = f"pi_demo{n}"
        rows.append(
            {
                "provider": Provider.STRIPE.value,
                "provider_event_id": f"evt_demo_{suffix}",
                "event_type": "payment_intent.succeeded",
                "payload": samples.stripe_event(
                    f"evt_demo_{suffix}", reference=ref, amount=1000 * n, created=created
                ),
                "updated_at": now,
                **columns,
            }
        )
        tx = f"tx_demo_{suffix}"
        rows.append(
            {
                "provider": Provider.MONETBIL.value,
                "provider_event_id": tx,
                "event_type": "payment.success",
                "payload": samples.monetbil_notification(
                    tx,
                    "1",
                    payment_ref=f"order-demo-{n}",
                    amount=str(500 * n),
                    service="demo-service",
                ),
                "updated_at": now,
                **columns,
            }
        )
    return rows


def create_demo_database(directory: Path) -> tuple[Engine, Path]:
    """A fresh, migrated demo database under `directory` (replaced if it exists)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DEMO_DB
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    engine = store.make_engine(f"sqlite:///{path.resolve()}")
    migrations.upgrade(engine)
    rows = demo_rows(utcnow())
    store.in_transaction(engine, lambda conn: store.insert_events(conn, rows=rows))
    return engine, path

"""`/healthz`, a database that is down (503, the provider retries), and what reaches the logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payments_pipeline import store
from payments_pipeline.http.logs import FORMAT, OneLinePoolErrorFilter, uvicorn_log_config

from .conftest import ClientFactory
from .support import (
    FORM_HEADERS,
    JSON_HEADERS,
    MONETBIL_SECRET,
    STRIPE_SECRET,
    Client,
    count_events,
    form,
    free_port,
    monetbil_fields,
    stripe_event,
    stripe_headers,
)


@pytest.fixture
def dead_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine whose database does not answer (nothing listens; no such directory)."""
    port = free_port()
    url = {
        "sqlite": f"sqlite:///{tmp_path}/missing-dir/payments.sqlite3",
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/nothing",
        "mysql": f"mysql://root@127.0.0.1:{port}/nothing",
    }[backend]
    connect_args = {} if backend == "sqlite" else {"connect_timeout": 2}
    engine = store.make_engine(url, hide_parameters=True, connect_args=connect_args)
    yield engine
    engine.dispose()


def test_healthz_answers_200_when_the_database_answers(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_healthz_answers_503_when_the_database_does_not(
    make_client: ClientFactory, dead_engine: Engine
) -> None:
    response = make_client(db=dead_engine).get("/healthz")
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"


def test_healthz_answers_503_on_an_unmigrated_database(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    empty = store.make_engine(f"sqlite:///{tmp_path}/empty.sqlite3")
    try:
        assert make_client(db=empty).get("/healthz").status_code == 503
    finally:
        empty.dispose()


def test_deliveries_get_503_and_retry_after_when_the_database_is_down(
    make_client: ClientFactory, dead_engine: Engine
) -> None:
    client = make_client(db=dead_engine)
    body = stripe_event("evt_db_down")
    stripe_response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    monetbil_response = client.post(
        "/webhooks/monetbil", content=form(monetbil_fields("tx_db_down")), headers=FORM_HEADERS
    )
    for response in (stripe_response, monetbil_response):
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert int(response.headers["retry-after"]) > 0


def test_no_payload_signature_or_secret_reaches_a_log_line(
    make_client: ClientFactory,
    engine: Engine,
    dead_engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    customer = "Jeanne-Secrete-Customer"
    body = stripe_event("evt_logged", reference="pi_logged_ref_777")
    signed = stripe_headers(body)
    fields = monetbil_fields("tx_logged", first_name=customer)
    client = make_client()
    down = make_client(db=dead_engine)
    sent = [
        client.post("/webhooks/stripe", content=body, headers=signed),
        client.post("/webhooks/stripe", content=body + " ", headers=signed),  # bad signature
        client.post("/webhooks/stripe", content=body, headers=JSON_HEADERS),  # none at all
        client.get(f"/webhooks/monetbil?{form(fields)}"),
        client.get(f"/webhooks/monetbil?{form({**fields, 'sign': 'b' * 32})}"),
        down.post("/webhooks/stripe", content=body, headers=signed),
        down.post("/webhooks/monetbil", content=form(fields), headers=FORM_HEADERS),
    ]
    client.wait_dispatched()
    assert [r.status_code for r in sent] == [200, 400, 400, 200, 400, 503, 503]
    # Everything the server side logs; httpx's own lines are the test client's, not the server's.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "webhook refused" in logged and "database unavailable" in logged
    for secret in (
        STRIPE_SECRET,
        MONETBIL_SECRET,
        signed["stripe-signature"],
        signed["stripe-signature"].split("v1=")[1],
        fields["sign"],
        customer,
        "pi_logged_ref_777",
        '"amount"',
    ):
        assert secret not in logged
    assert count_events(engine) == 2


def test_a_pool_error_is_one_line_without_traceback() -> None:
    # What SQLAlchemy's pool logs when it discards a connection MariaDB killed mid-transaction.
    config = uvicorn_log_config("info")
    assert "one_line_pool_errors" in config["handlers"]["stderr"]["filters"]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(OneLinePoolErrorFilter())
    pool_logger = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
    other = logging.getLogger("payments_pipeline.test_other")
    for logger in (pool_logger, other):
        logger.addHandler(handler)
    try:
        try:
            raise ConnectionResetError("lost connection to server during query")
        except ConnectionResetError:
            pool_logger.error("Exception during reset or %s", "similar", exc_info=True)
        try:
            raise ValueError("x")
        except ValueError:
            other.error("kept whole", exc_info=True)
    finally:
        for logger in (pool_logger, other):
            logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    pool = [line for line in lines if "sqlalchemy.pool" in line]
    assert pool and pool[0].endswith("Exception during reset or similar (ConnectionResetError)")
    assert "Traceback" not in lines[1] and "lost connection" not in stream.getvalue()
    # Other loggers keep their tracebacks (a bug elsewhere must stay diagnosable).
    assert "ValueError: x" in lines

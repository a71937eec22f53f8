"""The run's own database: created, migrated, given an audit trigger, cut at random, dropped.

The trigger is the soak's independent counter of effects. `payment_ledger` is written by the
product's handlers, so a bug there could hide itself; a row trigger on `payments` is written by the
database for every change that commits, whoever made it (a worker, a sweep's inline processing, a
stale attempt), and a rolled-back change leaves no row. The verifier matches this log against the
ledger one to one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets

import sqlalchemy as sa
from sqlalchemy import Engine

from payments_pipeline import migrations, store

from .config import Backend, backend_of

log = logging.getLogger(__name__)

PAYMENT_LOG = "soak_payment_log"
SPARE_SECONDS = 2.0

_LOG_COLUMNS = "payment_id, provider, reference, old_status, new_status, event_id"

_POSTGRES_TRIGGER = (
    f"""CREATE TABLE {PAYMENT_LOG} (
        id BIGSERIAL PRIMARY KEY, payment_id BIGINT NOT NULL, provider VARCHAR(32) NOT NULL,
        reference VARCHAR(255) NOT NULL, old_status VARCHAR(16), new_status VARCHAR(16) NOT NULL,
        event_id BIGINT)""",
    f"""CREATE FUNCTION soak_log_payment() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {PAYMENT_LOG} ({_LOG_COLUMNS}) VALUES (NEW.id, NEW.provider, NEW.reference,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status, NEW.last_event_id);
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER soak_payments_changed AFTER INSERT OR UPDATE ON payments
       FOR EACH ROW EXECUTE FUNCTION soak_log_payment()""",
)
_MYSQL_TRIGGER = (
    f"""CREATE TABLE {PAYMENT_LOG} (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, payment_id BIGINT NOT NULL,
        provider VARCHAR(32) NOT NULL, reference VARCHAR(255) NOT NULL, old_status VARCHAR(16),
        new_status VARCHAR(16) NOT NULL, event_id BIGINT)""",
    f"""CREATE TRIGGER soak_payments_inserted AFTER INSERT ON payments FOR EACH ROW
        INSERT INTO {PAYMENT_LOG} ({_LOG_COLUMNS})
        VALUES (NEW.id, NEW.provider, NEW.reference, NULL, NEW.status, NEW.last_event_id)""",
    f"""CREATE TRIGGER soak_payments_updated AFTER UPDATE ON payments FOR EACH ROW
        INSERT INTO {PAYMENT_LOG} ({_LOG_COLUMNS})
        VALUES (NEW.id, NEW.provider, NEW.reference, OLD.status, NEW.status, NEW.last_event_id)""",
)


class SoakDatabase:
    """`soak_<random>` on the server at `server_url`; `drop()` removes it (idempotent)."""

    def __init__(self, server_url: str) -> None:
        self.backend: Backend = backend_of(server_url)
        self.admin_url = store.normalize_url(server_url)
        self.name = f"soak_{secrets.token_hex(6)}"
        self.url = (
            sa.make_url(self.admin_url)
            .set(database=self.name)
            .render_as_string(hide_password=False)
        )
        # The admin engine stays on the server's own database: its connections are never among
        # the ones a cut terminates, and it can drop the soak database at the end.
        self._admin = sa.create_engine(
            self.admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, hide_parameters=True
        )
        self._created = False
        self.engine: Engine | None = None

    def create(self) -> None:
        """Create, migrate to head and install the audit trigger."""
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self.name}")
        self._created = True
        self.engine = store.make_engine(self.url, pool_size=4, max_overflow=4)
        migrations.upgrade(self.engine)
        with self.engine.begin() as conn:
            for ddl in _POSTGRES_TRIGGER if self.backend == "postgres" else _MYSQL_TRIGGER:
                conn.exec_driver_sql(ddl)

    def connection_ids(self, spare_older_than: float | None = None) -> list[int]:
        """Server-side ids of every connection to the soak database but the asker's; with
        `spare_older_than`, not those inside a transaction open longer than that (seconds)."""
        if self.backend == "postgres":
            sql = "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
            if spare_older_than is not None:
                sql += " AND (xact_start IS NULL OR xact_start > now() - make_interval(secs => :s))"
        else:
            sql = (
                "SELECT id FROM information_schema.processlist p "
                "WHERE db = :db AND id <> CONNECTION_ID()"
            )
            if spare_older_than is not None:
                sql += (
                    " AND NOT EXISTS (SELECT 1 FROM information_schema.innodb_trx t "
                    "WHERE t.trx_mysql_thread_id = p.id "
                    "AND t.trx_started < NOW() - INTERVAL :s SECOND)"
                )
        params = {"db": self.name, "s": spare_older_than}
        with self._admin.connect() as conn:
            return [int(i) for i in conn.execute(sa.text(sql), params).scalars()]

    def cut_connections(self, fraction: float, rng: random.Random) -> int:
        """Terminate a random `fraction` (at least one) of the database's connections; how many.

        PostgreSQL: `pg_terminate_backend`; MariaDB: `KILL CONNECTION`. A connection that ended
        on its own in between is simply not counted. Connections inside a transaction open for
        more than `SPARE_SECONDS` are spared: the soak's own work commits within a second, so
        those are the workers it froze (SIGSTOP) and whatever waits on their locks. Cutting
        them would roll the frozen attempt back on the server, and the attempt fence, which the
        freeze is there to test, would never be reached.
        """
        ids = self.connection_ids(spare_older_than=SPARE_SECONDS)
        if not ids:
            return 0
        chosen = rng.sample(ids, max(1, round(len(ids) * fraction)))
        cut = 0
        with self._admin.connect() as conn:
            for conn_id in chosen:
                if self.backend == "postgres":
                    done = conn.execute(
                        sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": conn_id}
                    ).scalar()
                    cut += bool(done)
                else:
                    try:
                        conn.exec_driver_sql(f"KILL CONNECTION {int(conn_id)}")
                        cut += 1
                    except sa.exc.DBAPIError:  # 1094 unknown thread id: it ended meanwhile
                        pass
        return cut

    def drop(self) -> None:
        """Drop the database (closing every connection to it first) and the admin engine."""
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        try:
            if self._created:
                with self._admin.connect() as conn:
                    if self.backend == "postgres":
                        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
                    else:
                        for conn_id in self.connection_ids():
                            with contextlib.suppress(sa.exc.DBAPIError):
                                conn.exec_driver_sql(f"KILL CONNECTION {int(conn_id)}")
                        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.name}")
                self._created = False
        finally:
            self._admin.dispose()

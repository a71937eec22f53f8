"""What the benchmark scripts share: their own PostgreSQL databases (created on a maintenance URL,
migrated, dropped at the end also on error, Ctrl-C or SIGTERM), the commit floor, progress lines,
the machine and commit facts a report starts with, and the report's number formatting.

The scripts run as `.venv/bin/python benchmarks/<name>.py`: Python puts the script's own folder
first on `sys.path`, so `import harness` finds this module beside them.
"""

from __future__ import annotations

import math
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa

from payments_pipeline import migrations, store

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- progress and signals ------------------------------------------------------------------------


def progress(message: str) -> None:
    """One timestamped line on stderr, so stdout stays the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so every `finally` runs and drops what the
    script created. SIGINT too: a non-interactive shell starts background jobs with it ignored."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# --- machine and code ----------------------------------------------------------------------------


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def this_commit() -> str:
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + (" (with uncommitted changes)" if dirty else "")


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def ram_gb() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any product setting, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAYMENTS_", "STRIPE_", "MONETBIL_", "DAGSTER_"))
        and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }
    env.update(extra)
    return env


@contextmanager
def baseline_tree(rev: str) -> Iterator[tuple[Path, str]]:
    """A temporary detached worktree of `rev`, set up with `./dev setup`; removed at the end.
    Yields the tree and the full commit."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-baseline-"))
    tree = tmp / "tree"
    try:
        git("worktree", "add", "--detach", str(tree), commit)
        progress(f"baseline {commit[:9]}: ./dev setup in {tree}")
        done = subprocess.run(
            ["./dev", "setup"], cwd=tree, env=clean_env(), capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"./dev setup of the baseline failed: {done.stderr.strip()[-800:]}")
        yield tree, commit
    finally:
        with suppress(Exception):
            git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)


# --- processes and CPU ---------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(port: int, exited: Callable[[], str | None], limit: float) -> str | None:
    """Until `GET /healthz` on 127.0.0.1:`port` answers 200: None, or why not (`exited()` says
    whether the server process is gone, and how)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (gone := exited()) is not None:
            return gone
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                return None
        time.sleep(0.2)
    return "serve did not become healthy within the timeout"


def interrupt_and_wait(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT (a server's graceful stop), then SIGKILL if it is still running after `grace` s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def process_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def backend_pids(database: str) -> list[int]:
    """The PostgreSQL server processes serving `database` now (read from /proc)."""
    pids = []
    needle = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmdline.startswith(b"postgres:") and needle in cmdline:
            pids.append(int(entry.name))
    return pids


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- databases -----------------------------------------------------------------------------------


class Databases:
    """Creates, copies and (always, through `drop_all`) drops the benchmark's databases through a
    maintenance URL. Names start with `<prefix>_<random>`, so runs side by side never collide."""

    def __init__(self, url: str, prefix: str = "pp_bench") -> None:
        self.base_url = sa.make_url(store.normalize_url(url))
        if self.base_url.get_backend_name() != "postgresql":
            raise SystemExit("--postgres-url must be a PostgreSQL URL")
        self.admin = sa.create_engine(
            self.base_url.render_as_string(hide_password=False),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.NullPool,
        )
        self.prefix = f"{prefix}_{secrets.token_hex(4)}"
        self.created: list[str] = []
        self._n = 0

    def url(self, name: str) -> str:
        return self.base_url.set(database=name).render_as_string(hide_password=False)

    def create(self, name: str | None = None, *, template: str | None = None) -> str:
        """A new database (`<prefix>_<n>` unless named), a file copy of `template` if given."""
        if name is None:
            self._n += 1
            name = f"{self.prefix}_{self._n}"
        self.created.append(name)  # before CREATE: an interrupt mid-CREATE is still cleaned up
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            sql += f' TEMPLATE "{template}" STRATEGY FILE_COPY'
        with self.admin.connect() as conn:
            conn.exec_driver_sql(sql)
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in reversed(list(self.created)):
            try:
                self.drop(name)
            except Exception as exc:  # keep dropping the others
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        self.admin.dispose()

    def checkpoint(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql("CHECKPOINT")

    def server_version(self) -> str:
        with self.admin.connect() as conn:
            return str(conn.exec_driver_sql("SELECT version()").scalar())

    def server_facts(self, settings: Sequence[str]) -> dict[str, str]:
        """The version and the given settings (`SHOW`), for the report's machine section."""
        facts = {"version": self.server_version()}
        with self.admin.connect() as conn:
            for name in settings:
                facts[name] = str(conn.exec_driver_sql(f"SHOW {name}").scalar())
        return facts

    def migrate(self, name: str, migrate_with: Sequence[str] | None = None) -> str:
        """Bring database `name` to the schema, by this tree's `migrations.upgrade` or by running
        the command `migrate_with` + `db upgrade` (another tree's own); returns its URL."""
        url = self.url(name)
        if migrate_with is None:
            engine = store.make_engine(url)
            try:
                migrations.upgrade(engine)
            finally:
                engine.dispose()
            return url
        done = subprocess.run(
            [*migrate_with, "--log-level", "warning", "db", "upgrade"],
            env=clean_env(PAYMENTS_DATABASE_URL=url),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {done.stderr.strip()[-500:]}")
        return url

    @contextmanager
    def database(self, migrate_with: Sequence[str] | None = None) -> Iterator[str]:
        """A fresh, migrated database (see `migrate`), dropped when the block ends."""
        name = self.create()
        try:
            yield self.migrate(name, migrate_with)
        finally:
            self.drop(name)


@contextmanager
def own_database(admin_url: str, prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """One database `<prefix>_<random>` of the script's own (migrated unless `migrate=False`, e.g.
    for Dagster's storage); yields its URL and drops it at the end, also on error or interrupt."""
    dbs = Databases(admin_url, prefix)
    try:
        name = dbs.create(dbs.prefix)
        yield dbs.migrate(name) if migrate else dbs.url(name)
    finally:
        dbs.drop_all()


def count_by_status(url: str) -> dict[str, int]:
    """Events per status, all providers together."""
    # Plain SQL, not a store function: the same script counts a baseline commit's rows too
    # (`receiver_ab.sh` runs this tree's script on an older package), whatever that returns.
    engine = store.make_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, count(*) FROM webhook_events GROUP BY status")
            ).all()
    finally:
        engine.dispose()
    return {str(status): int(n) for status, n in rows}


# --- the commit floor ----------------------------------------------------------------------------


def pgbench_floor(dbs: Databases, seconds: int, clients: int = 4) -> dict[str, Any]:
    """What this PostgreSQL commits: `pgbench -N -c <clients> -T <seconds>` on a pgbench database
    of its own (`pgbench -i -s 1`, dropped after), in transactions/s, with the command run."""
    name = dbs.create(f"pp_bench_pgbench_{secrets.token_hex(4)}")
    url = dbs.base_url
    env = clean_env()
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    conn_args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    if url.username:
        conn_args += ["-U", url.username]
    try:
        init = subprocess.run(
            ["pgbench", "-i", "-s", "1", "-q", *conn_args, name],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"pgbench -i failed: {init.stderr.strip()[-500:]}")
        command = ["pgbench", "-N", "-c", str(clients), "-T", str(seconds), *conn_args, name]
        run = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=seconds + 120
        )
        match = re.search(r"^tps = ([\d.]+)", run.stdout, re.MULTILINE)
        if run.returncode != 0 or match is None:
            raise RuntimeError(f"pgbench failed: {run.stdout[-500:]} {run.stderr[-500:]}")
        return {"tps": float(match.group(1)), "command": shlex.join(command)}
    finally:
        dbs.drop(name)


# --- report --------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values (a phase that did not run prints as `-`)."""
    return statistics.median(values) if values else math.nan


def median_ms(seconds: Sequence[float]) -> float:
    return round(median(seconds) * 1000, 2)


def quantiles_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of seconds, in ms."""
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(pick(0.99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    """A figure, or `-` when it was not measured."""
    return "-" if value is None else f"{value:{spec}}{unit}"


def fmt_s(seconds: float) -> str:
    """Seconds as ms below one second, `-` for NaN."""
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")

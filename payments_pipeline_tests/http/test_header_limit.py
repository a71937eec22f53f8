"""The header limit (`PAYMENTS_MAX_HEADER_BYTES`) against `payments-pipeline serve` itself.

The server runs as its own process on a free 127.0.0.1 port (its memory is what is measured, from
/proc/<pid>/status), the clients are raw sockets that keep sending a header that never ends until
the server answers or closes. Everything is bounded in time, and the server is stopped by its pid.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payments_pipeline.config import ConfigError, load_settings
from payments_pipeline.http.app import create_app
from payments_pipeline.http.server import http_options

from ..helpers import make_settings
from .support import running_server, serve

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
CHUNK = 64 * 1024
PARALLEL = 50
# Target + names + values of `padded`'s request without X-Pad's value.
BASE_COUNT = sum(map(len, ("/healthz", "host", "a", "x-pad", "connection", "close")))


def rss_mib(pid: int) -> float:
    """The process's resident set size (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def request(port: int, head: bytes, timeout: float = 10) -> bytes:
    """Send one request head and read the whole answer (the test requests close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def padded(size: int) -> bytes:
    """A request whose counted header bytes (target + names + values) are exactly `size`."""
    pad = b"p" * (size - BASE_COUNT)
    return b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: " + pad + b"\r\nConnection: close\r\n\r\n"


def endless_header(port: int, total: int, deadline: float) -> tuple[str, int]:
    """Send a header of `total` bytes until the server answers or closes; return what happened
    ("answered" with the answer's first line, "closed", "reset", "timeout") and bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ")
        sock.setblocking(False)
        chunk = b"a" * CHUNK
        while time.monotonic() < deadline:
            want_write = [sock] if sent < total else []
            readable, writable, _ = select.select([sock], want_write, [], 0.5)
            try:
                if readable:
                    answer = sock.recv(65536)
                    if not answer:
                        return "closed", sent
                    while not answer.endswith(b"}") and time.monotonic() < deadline:
                        select.select([sock], [], [], 0.5)
                        more = sock.recv(65536)
                        if not more:
                            break
                        answer += more
                    return answer.decode("latin-1"), sent
                if writable:
                    sent += sock.send(chunk)
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "reset", sent
        return "timeout", sent


def assert_refused(answer: str, limit: int) -> None:
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert "connection: close" in head.lower()
    assert json.loads(body) == {
        "error": "headers_too_large",
        "detail": f"request headers exceed {limit} bytes",
    }


def test_the_setting_is_read_from_the_environment() -> None:
    assert load_settings({}).max_header_bytes == 16 * 1024
    assert load_settings({"PAYMENTS_MAX_HEADER_BYTES": "4096"}).max_header_bytes == 4096
    with pytest.raises(ConfigError, match="PAYMENTS_MAX_HEADER_BYTES"):
        load_settings({"PAYMENTS_MAX_HEADER_BYTES": "lots"})


def test_headers_up_to_the_limit_pass_and_one_byte_more_is_431(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    # Two workers: the limit must reach the spawned worker processes too.
    with serve(sqlite_engine, tmp_path, "--workers", "2", PAYMENTS_MAX_HEADER_BYTES="4096") as (
        port,
        _,
    ):
        assert request(port, padded(4096)).startswith(b"HTTP/1.1 200 ")
        assert_refused(request(port, padded(4097)).decode(), 4096)
        # The same head split into small writes is judged the same way.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = padded(4097)
            for i in range(0, len(head), 100):
                sock.sendall(head[i : i + 100])
                time.sleep(0.001)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert_refused(answer.decode(), 4096)
        assert request(port, padded(4096)).startswith(b"HTTP/1.1 200 ")


def test_a_64_mib_header_is_refused_without_being_read(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    with serve(sqlite_engine, tmp_path) as (port, pid):
        started = time.monotonic()
        outcome, sent = endless_header(port, 64 * MIB, deadline=started + 30)
        elapsed = time.monotonic() - started
        assert_refused(outcome, 16 * 1024)
        assert elapsed < 10, elapsed
        # What was sent before the answer is what the kernel's buffers took, not 64 MiB.
        assert sent < 16 * MIB, sent
        assert rss_mib(pid) < 200
        assert request(port, padded(1000)).startswith(b"HTTP/1.1 200 ")


def test_fifty_connections_with_32_mib_headers_leave_memory_flat(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    with serve(sqlite_engine, tmp_path) as (port, pid):
        # Warm up: a normal answer and a refusal, so what is measured is the attack alone.
        assert request(port, padded(1000)).startswith(b"HTTP/1.1 200 ")
        assert_refused(request(port, padded(20_000)).decode(), 16 * 1024)
        before = rss_mib(pid)
        outcomes: list[tuple[str, int]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(PARALLEL)
        deadline = time.monotonic() + 60

        def attack() -> None:
            barrier.wait(timeout=30)
            outcome = endless_header(port, 32 * MIB, deadline)
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=attack, daemon=True) for _ in range(PARALLEL)]
        for thread in threads:
            thread.start()
        peak = before
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 5:
            peak = max(peak, rss_mib(pid))
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=5)
        after = rss_mib(pid)
        print(f"server RSS: before {before:.1f} MiB, peak {peak:.1f} MiB, after {after:.1f} MiB")
        assert len(outcomes) == PARALLEL, "a client did not finish in time"
        for outcome, sent in outcomes:
            assert_refused(outcome, 16 * 1024)
            assert sent < 16 * MIB
        assert peak - before < 50, (before, peak)
        assert after - before < 50, (before, after)
        assert request(port, padded(1000)).startswith(b"HTTP/1.1 200 ")


def test_keep_alive_and_pipelined_requests_are_judged_one_by_one(sqlite_engine: Engine) -> None:
    # In process (a thread), with serve's own protocol options: a connection that has already
    # been answered is judged afresh for its next request, and requests pipelined in one write
    # are each counted alone (the first, small, passes; the second is refused).
    settings = make_settings(
        sqlite_engine, stripe_webhook_secrets=("whsec_x",), max_header_bytes=2048
    )
    app = create_app(settings, engine=sqlite_engine)
    small = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    big = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n"
    with running_server(app, **http_options(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(2):  # keep-alive: two answered requests, then the refused one
                sock.sendall(small)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.sendall(big)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert_refused(answer.decode(), 2048)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(small + big)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        first, _, rest = answer.partition(b"HTTP/1.1 431")
        assert first.startswith(b"HTTP/1.1 200 ") and rest, answer[:300]
        assert_refused((b"HTTP/1.1 431" + rest).decode(), 2048)

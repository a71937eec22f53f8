"""A stdlib HTTP server on 127.0.0.1 in a thread, as a context manager that stops it.

Every fake of this package is one: `with Fake() as fake:` starts `serve_forever` on a free port,
leaving the block shuts it down, closes the listening socket and joins the thread, so a test that
ends (or fails) leaves no server and no socket behind.
"""

from __future__ import annotations

import abc
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """No access log on stderr; helpers to read a body and answer JSON."""

    server_version = "fake"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_bytes(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(
        self, status: int, document: object, *, headers: dict[str, str] | None = None
    ) -> None:
        self.send_bytes(status, json.dumps(document).encode(), headers=headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up first (a timeout test) is expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Running(abc.ABC):
    """Started on entering `with`, stopped on leaving it, whatever the block raised."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerThread(Running):
    """`ThreadingHTTPServer(("127.0.0.1", 0), handler)` served from a thread while entered."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = _Server(("127.0.0.1", 0), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="fake-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server.server_close()


class Served(Running):
    """A fake whose HTTP server (`_server`) runs while it is entered."""

    _server: ServerThread

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

"""uvicorn's httptools protocol with a limit on the request's headers (431), for `serve`.

uvicorn's httptools implementation has no header limit: a client can send one 64 MiB header and
the parser keeps every byte of it (httptools joins the pieces of a header value until the value
ends), so a few such connections grow the process by hundreds of MiB before any answer. uvicorn's
h11 implementation does have one (`h11_max_incomplete_event_size`), but it is the slower parser
(docs/receiver.md has the measurement), so `serve` keeps httptools and adds the limit here.

What is counted: the request target plus every header name and value, as the parser hands them
over (`on_url`, `on_header`), which is the header block without its separators. Two checks:

- once the headers are complete, their count decides: above the limit is 431, whatever the
  segmentation of the bytes on the wire was;
- while they are still arriving, the raw bytes received for them are counted, and past twice the
  limit the request is refused at once (the separators are a few bytes per header, so no header
  block within the limit comes near this; the margin only keeps the decision independent of how
  the bytes were split). The rest is never read: at most twice the limit plus one read of the
  socket is ever held for one request's headers.

The refusal is written by hand (no app runs: there is no request yet) as our JSON error shape,
`431 Request Header Fields Too Large`, `{"error": "headers_too_large", ...}`, with
`Connection: close`. The connection then stops reading, half-closes (the client gets the answer
and an end of stream) and is closed after `LINGER_SECONDS`; the bytes the client keeps sending in
the meantime stay in the kernel's socket buffer, not in this process.

The limit travels in uvicorn's own `Config.h11_max_incomplete_event_size`: it is the same setting
for h11 (which a plain `uvicorn --http h11` run would use), and `Config` is what uvicorn hands to
every spawned worker process, so `serve --workers N` needs nothing else.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ..config import DEFAULTS
from .errors import ErrorCode

log = logging.getLogger(__name__)

# A refused connection is closed this long after the answer, so the client can read it first.
LINGER_SECONDS = 1.0
STATUS_LINE = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class _Phase(enum.Enum):
    IDLE = "idle"  # between requests (or before the first)
    HEAD = "head"  # request line and headers arriving
    BODY = "body"  # headers complete: the request is the app's


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing; never leaves `data_received`."""


def refusal_body(limit: int) -> bytes:
    """The 431 body: our error shape, with a fixed detail that names the limit only."""
    detail = f"request headers exceed {limit} bytes"
    document = {"error": ErrorCode.HEADERS_TOO_LARGE.value, "detail": detail}
    return json.dumps(document, separators=(",", ":")).encode("ascii")


class HeaderLimitedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that refuses (431) a request whose headers exceed the limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULTS.max_header_bytes
        self._phase = _Phase.IDLE
        self._counted = 0  # target + names + values handed over by the parser so far
        self._raw = 0  # bytes received for a head that was still incomplete after them
        self._refused = False
        self._refusal_pending = False  # a pipelined refusal waits for the answer before it

    # --- parser callbacks: count what the parser hands over -----------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEAD
        self._counted = 0
        self._raw = 0

    def on_url(self, url: bytes) -> None:
        self._counted += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._counted += len(name) + len(value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._phase = _Phase.BODY
        if self._counted > self.max_header_bytes:
            raise _HeadersTooLarge
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _Phase.IDLE
        super().on_message_complete()

    # --- the transport's side ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """uvicorn's `data_received` plus the two header checks (module docstring)."""
        if self._refused:  # reading is paused; a read already under way is dropped
            return
        self._unset_keepalive_if_required()
        # A chunk that starts between requests or inside a head belongs to that head until it
        # completes; one that starts in a body may end a request and begin the next, and is not
        # counted (an under-count of at most one read, never a refusal of a valid request).
        counts = self._phase is not _Phase.BODY
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._refuse()
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if counts and self._phase is _Phase.HEAD:
            self._raw += len(data)
            if self._raw > 2 * self.max_header_bytes:
                self._refuse()

    def on_response_complete(self) -> None:
        if not self._refusal_pending:
            super().on_response_complete()
            return
        self._refusal_pending = False
        self.server_state.total_requests += 1
        self._write_refusal()

    def _refuse(self) -> None:
        """Stop reading and answer 431: at once, or, when the request was pipelined behind one
        whose answer is still being produced, right after that answer (`on_response_complete`),
        so that answers keep their order."""
        self._refused = True
        self.transport.pause_reading()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.warning(
            "request refused client=%s status=431 error=%s: headers over %s bytes",
            client,
            ErrorCode.HEADERS_TOO_LARGE.value,
            self.max_header_bytes,
        )
        if self.cycle is not None and not self.cycle.response_complete:
            self._refusal_pending = True
            return
        self._write_refusal()

    def _write_refusal(self) -> None:
        """Write the 431, half-close, and close the connection `LINGER_SECONDS` later."""
        body = refusal_body(self.max_header_bytes)
        head = [STATUS_LINE]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

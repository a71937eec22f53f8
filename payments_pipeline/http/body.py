"""Reading a request body without trusting its size, and checking its media type.

The limit is enforced twice: a declared `Content-Length` above it is refused before a byte is read,
and a chunked (or lying) body is counted while it streams, so at most `limit` bytes plus one
chunk are ever held in memory for one request.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from .errors import ErrorCode, Refusal

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def media_type(request: Request) -> str | None:
    """The `Content-Type` without its parameters (`; charset=utf-8`), lowercased; None if absent."""
    raw = request.headers.get("content-type")
    if raw is None:
        return None
    return raw.split(";", 1)[0].strip().lower()


def require_media_type(request: Request, expected: str) -> None:
    """Refuse (415) any other media type. The detail names the expected type only: the received
    one is the sender's text, and no refusal body echoes a value from the request."""
    if media_type(request) != expected:
        raise Refusal(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be {expected}")


def _too_large(limit: int) -> Refusal:
    return Refusal(413, ErrorCode.PAYLOAD_TOO_LARGE, f"body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body if it is at most `limit` bytes, else `Refusal(413)`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = bytearray()
    try:
        async for chunk in request.stream():
            received += chunk
            if len(received) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        # Nobody is left to answer; the refusal only keeps the error path (and the logs) uniform.
        raise Refusal(400, ErrorCode.MALFORMED_PAYLOAD, "client disconnected mid-body") from None
    return bytes(received)

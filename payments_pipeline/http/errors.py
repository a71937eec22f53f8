"""How the receiver says no: one exception, one JSON shape, one status code per kind of problem.

A provider only sees the status code and the body, so both must say plainly what was wrong. The
`detail` is always a fixed text: the providers' messages (which never carry a secret, a signature
or a payload value, `providers.errors`) or the texts written in `http/`. No refusal body repeats a
value from the request (a header, the path, a field name or value).
"""

from __future__ import annotations

from enum import StrEnum

from starlette.responses import JSONResponse

# Seconds a provider should wait before retrying a delivery we could not record (503).
RETRY_AFTER_SECONDS = 10


class ErrorCode(StrEnum):
    INVALID_SIGNATURE = "invalid_signature"  # 400: bad, missing or stale signature; no secret set
    MALFORMED_PAYLOAD = "malformed_payload"  # 400
    UNKNOWN_FIELD = "unknown_field"  # 400: Monetbil: a field name outside its notification set
    DUPLICATE_FIELD = "duplicate_field"  # 400: Monetbil: a field name given twice
    NOT_FOUND = "not_found"  # 404
    UNKNOWN_PROVIDER = "unknown_provider"  # 404
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    PAYMENT_NOT_CONFIRMED = "payment_not_confirmed"  # 409: Monetbil's checkPayment disagrees
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    HEADERS_TOO_LARGE = "headers_too_large"  # 431: written by the server (http.protocol)
    INTERNAL_ERROR = "internal_error"  # 500: a bug; never expected
    DATABASE_UNAVAILABLE = "database_unavailable"  # 503: nothing recorded, the provider retries
    CONFIRMATION_UNAVAILABLE = "confirmation_unavailable"  # 503: checkPayment did not answer


def error_response(
    status: int, error: ErrorCode, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error body every refusal uses: `{"error": <code>, "detail": <one line>}`."""
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **(headers or {})}
    return JSONResponse({"error": error.value, "detail": detail}, status, headers=headers)


class Refusal(Exception):
    """A delivery we answer with an error before anything is stored.

    `detail` goes to the response and must be a fixed text (it may name the expected value, never
    the received one). `log_detail`, when given, replaces it in the log line, for what an operator
    needs and a response must not carry (e.g. which unknown field name was refused).
    """

    def __init__(
        self, status: int, error: ErrorCode, detail: str, *, log_detail: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.log_detail = log_detail or detail

    def response(self) -> JSONResponse:
        headers = {"Connection": "close"} if self.status == 413 else None
        return error_response(self.status, self.error, self.detail, headers)

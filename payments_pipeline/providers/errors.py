"""The two ways a provider delivery is rejected, and the identifier check both providers share.

Messages name the problem and the field, never a value: they end up in HTTP responses, logs and
`webhook_events.last_error`, where a secret, a signature or a customer's payload must not go.
"""

from __future__ import annotations

from payments_pipeline.models import KEY_LENGTH


class SignatureError(ValueError):
    """The delivery is not authenticated: signature or secret missing, malformed, wrong or expired.

    The caller answers 400/401 and stores nothing; the message never contains the secret, the
    signature or the payload.
    """


class PayloadError(ValueError):
    """The body is malformed or lacks what its type needs: permanent, a retry cannot help."""


def check_identifier(value: object, what: str) -> str:
    """Return `value` if it can serve as a stored key (event id, payment reference), else raise.

    A key must be a non-blank string of printable characters (no NUL, which PostgreSQL text
    refuses, no lone surrogates, which no database encodes) short enough for its column
    (`KEY_LENGTH`).
    """
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{what} is missing or blank")
    if len(value) > KEY_LENGTH or not value.isprintable():
        raise PayloadError(f"{what} is longer than {KEY_LENGTH} or not printable text")
    return value

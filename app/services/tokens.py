"""Signed recipient tokens for tracking and unsubscribe links.

A token carries only the recipient id, signed with the app's secret key: no address in clear, and a
changed character makes it worthless. One token serves the open pixel, the click redirect (with the
link id beside it) and the unsubscribe page of one message.
"""

from __future__ import annotations

from functools import lru_cache

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

SALT = "sendboard.recipient"


@lru_cache(maxsize=8)
def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=SALT)


def recipient_token(recipient_id: int, secret: str | None = None) -> str:
    """The signed token for one recipient (pass `secret` outside an app context)."""
    key = secret if secret is not None else current_app.config["SECRET_KEY"]
    return str(_serializer(key).dumps(recipient_id))


def read_recipient_token(token: str, secret: str | None = None) -> int | None:
    """The recipient id in a valid token, or None for anything forged, cut or malformed."""
    key = secret if secret is not None else current_app.config["SECRET_KEY"]
    try:
        value = _serializer(key).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None

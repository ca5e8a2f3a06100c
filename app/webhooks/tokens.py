"""Reading recipient tokens in bulk: the same check as app.services.tokens, with the signer built
once per secret instead of once per token (a batch of 1,000 events reads 1,000 tokens)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from app.services.tokens import SALT


@lru_cache(maxsize=8)
def _pair(secret: str) -> tuple[URLSafeSerializer, Any]:
    serializer = URLSafeSerializer(secret, salt=SALT)
    return serializer, serializer.make_signer(SALT)


def read_token(token: str) -> int | None:
    """The recipient id in a valid token, else None (same answers as read_recipient_token)."""
    if not token or len(token) > 200:
        return None
    serializer, signer = _pair(current_app.config["SECRET_KEY"])
    try:
        value = serializer.load_payload(signer.unsign(token))
    except (BadSignature, ValueError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None

"""Signed recipient tokens for tracking and unsubscribe links.

A token carries only the recipient id, signed with the app's secret key: no address in clear, and a
changed character makes it worthless. One token serves the open pixel, the click redirect (with the
link id beside it) and the unsubscribe page of one message.
"""

from __future__ import annotations

import base64
import hmac
import zlib
from functools import lru_cache

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

SALT = "sendboard.recipient"
SHORTEST_ZLIB = 9  # bytes: header, one literal and the end of a fixed block, checksum


@lru_cache(maxsize=8)
def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=SALT)


@lru_cache(maxsize=8)
def _mac(secret: str) -> tuple[hmac.HMAC, bytes]:
    """The serializer's own signer, keyed once: its HMAC (copied per token) and separator."""
    signer = _serializer(secret).make_signer()
    return hmac.new(signer.derive_key(), digestmod=signer.digest_method), signer.sep


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def recipient_token(recipient_id: int, secret: str | None = None) -> str:
    """The signed token for one recipient (pass `secret` outside an app context).

    The same token `_serializer(secret).dumps(recipient_id)` gives, made without deriving the
    key again for every message (the sender makes one per message): the id's compact JSON in
    base64 (zlib-compressed behind a leading dot when that is shorter, as the serializer does),
    then the separator and the HMAC of that payload.
    """
    key = secret if secret is not None else current_app.config["SECRET_KEY"]
    base, sep = _mac(key)
    data = str(int(recipient_id)).encode()
    payload = _b64(data)
    if len(data) > SHORTEST_ZLIB + 1:  # shorter ids never gain: zlib's own frame takes 9 bytes
        compressed = zlib.compress(data)
        if len(compressed) < len(data) - 1:
            payload = b"." + _b64(compressed)
    mac = base.copy()
    mac.update(payload)
    return (payload + sep + _b64(mac.digest())).decode()


def read_recipient_token(token: str, secret: str | None = None) -> int | None:
    """The recipient id in a valid token, or None for anything forged, cut or malformed."""
    key = secret if secret is not None else current_app.config["SECRET_KEY"]
    try:
        value = _serializer(key).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None

"""Who may post events: each provider's own signature, or a shared secret.

Every check returns None when the request is authentic, else the reason it was refused (logged and
sent back in the 401 body). Nothing configured means nobody is trusted: an endpoint without a key
refuses everything rather than accepting everything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import threading
import time
from typing import Any

from flask import current_app, request

log = logging.getLogger(__name__)

MAX_SKEW_SECONDS = 300  # signed timestamps older (or newer) than this are replays
_seen_tokens: dict[str, float] = {}
_seen_lock = threading.Lock()


def setting(name: str, default: str = "") -> str:
    """A webhook setting from the app config, else the environment (so it can be set either way)."""
    value = current_app.config.get(name)
    if value in (None, ""):
        value = os.environ.get(name, default)
    return str(value)


def check_basic_auth() -> str | None:
    """HTTP basic auth against SENDBOARD_WEBHOOK_BASIC_USER / _PASSWORD."""
    user = setting("SENDBOARD_WEBHOOK_BASIC_USER")
    password = setting("SENDBOARD_WEBHOOK_BASIC_PASSWORD")
    if not user or not password:
        return "basic auth is not configured"
    given = request.authorization
    if given is None or given.type != "basic":
        return "missing credentials"
    ok_user = hmac.compare_digest((given.username or "").encode(), user.encode())
    ok_pass = hmac.compare_digest((given.password or "").encode(), password.encode())
    return None if ok_user and ok_pass else "wrong credentials"


def _fresh(timestamp: str, now: float | None = None) -> bool:
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    return abs(now - ts) <= MAX_SKEW_SECONDS


# ---------------------------------------------------------------- SendGrid


def _load_sendgrid_key(raw: str) -> Any:
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    raw = raw.strip()
    if raw.startswith("-----BEGIN"):
        return load_pem_public_key(raw.encode())
    # SendGrid's settings page shows the key as base64 DER without PEM armour.
    return load_der_public_key(base64.b64decode(raw))


def check_sendgrid(body: bytes) -> str | None:
    """SendGrid's Signed Event Webhook (ECDSA P-256 over timestamp + body), else basic auth."""
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    key = setting("SENDGRID_WEBHOOK_PUBLIC_KEY")
    if key and signature:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if not _fresh(timestamp):
            return "stale or missing timestamp"
        try:
            public_key = _load_sendgrid_key(key)
            public_key.verify(base64.b64decode(signature), timestamp.encode() + body,
                              ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            return "bad signature"
        return None
    return check_basic_auth()


# ---------------------------------------------------------------- Mailgun


def check_mailgun(signature: Any) -> str | None:
    """HMAC-SHA256 of timestamp + token with the signing key; stale or replayed tokens refused."""
    key = setting("MAILGUN_WEBHOOK_SIGNING_KEY")
    if not key:
        return "mailgun signing key is not configured"
    if not isinstance(signature, dict):
        return "missing signature"
    timestamp = str(signature.get("timestamp", ""))
    token = str(signature.get("token", ""))
    given = str(signature.get("signature", ""))
    if not timestamp or not token or not given:
        return "missing signature"
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        return "bad signature"
    if not _fresh(timestamp):
        return "stale timestamp"
    if not remember_token(f"mailgun:{token}"):
        return "replayed token"
    return None


def remember_token(token: str) -> bool:
    """True the first time a token is seen within the replay window, False after.

    Redis holds the tokens so every web process shares them; if Redis is unreachable a
    per-process memory keeps refusing replays to this process, and event ids keep ingestion
    idempotent in any case.
    """
    ttl = MAX_SKEW_SECONDS * 2
    try:
        from app.redis_conn import get_redis

        return bool(get_redis().set(f"sb:webhook-token:{token}", 1, nx=True, ex=ttl))
    except Exception as exc:  # Redis down or not configured
        log.warning("webhook replay check falls back to process memory: %s", exc)
    now = time.time()
    with _seen_lock:
        for old, seen_at in list(_seen_tokens.items()):
            if now - seen_at > ttl:
                del _seen_tokens[old]
        if token in _seen_tokens:
            return False
        _seen_tokens[token] = now
        return True


# ---------------------------------------------------------------- SES (via SNS)

_SNS_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SNS_SUBSCRIPTION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                          "TopicArn", "Type")


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical text SNS signs: selected fields as "name\\nvalue\\n", in this order."""
    keys = (_SNS_NOTIFICATION_KEYS if message.get("Type") == "Notification"
            else _SNS_SUBSCRIPTION_KEYS)
    parts = []
    for key in keys:
        if key in message and message[key] is not None:
            parts.append(f"{key}\n{message[key]}\n")
    return "".join(parts).encode()


def check_ses(message: dict[str, Any]) -> str | None:
    """The SNS signature against the configured certificate (SES_SNS_CERT_PEM), else basic auth.

    The certificate is configured rather than fetched from SigningCertURL, so a forged message
    cannot point us at a certificate of its own choosing, and no request leaves the server.
    """
    pem = setting("SES_SNS_CERT_PEM")
    if not pem:
        return check_basic_auth()
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if not pem.lstrip().startswith("-----BEGIN") and os.path.exists(pem):
        with open(pem, "rb") as fh:
            pem = fh.read().decode()
    version = str(message.get("SignatureVersion", "1"))
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303 (SNS v1)
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        cert.public_key().verify(  # type: ignore[union-attr,call-arg]
            base64.b64decode(str(message.get("Signature", ""))),
            sns_string_to_sign(message), padding.PKCS1v15(), algorithm,
        )
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return "bad SNS signature"
    return None


# ---------------------------------------------------------------- generic


def generic_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Sendboard-Signature value for a body: sha256=<hex HMAC of "timestamp." + body>."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_generic(body: bytes) -> str | None:
    """HMAC-SHA256 with GENERIC_WEBHOOK_SECRET over the timestamp and the raw body."""
    secret = setting("GENERIC_WEBHOOK_SECRET")
    if not secret:
        return "generic webhook secret is not configured"
    timestamp = request.headers.get("X-Sendboard-Timestamp", "")
    given = request.headers.get("X-Sendboard-Signature", "")
    if not timestamp or not given:
        return "missing X-Sendboard-Timestamp or X-Sendboard-Signature"
    expected = generic_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected, given):
        return "bad signature"
    if not _fresh(timestamp):
        return "stale timestamp"
    return None

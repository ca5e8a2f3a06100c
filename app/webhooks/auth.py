"""Who may post events: each provider's own signature, or a shared secret.

Every check returns None when the request is authentic, else the reason it was refused (logged and
sent back in the 401 body). Nothing configured means nobody is trusted: an endpoint without a key
refuses everything rather than accepting everything.

The checks read raw bytes and header strings and never raise: a header that is not ASCII, absurdly
long, or not the shape a provider sends is a refusal like any other wrong signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import current_app, request

log = logging.getLogger(__name__)

MAX_SKEW_SECONDS = 300  # signed timestamps older (or newer) than this are replays
# SNS retries a delivery for up to an hour, with the message (and its Timestamp) unchanged.
SNS_MAX_AGE_SECONDS = 3600
SNS_MAX_AHEAD_SECONDS = MAX_SKEW_SECONDS
MAX_SIGNATURE_CHARS = 1024  # every provider's signature is far shorter than this
_seen_tokens: dict[str, float] = {}
_seen_lock = threading.Lock()

_Check = TypeVar("_Check", bound=Callable[..., "str | None"])


def never_raises(check: _Check) -> _Check:
    """A check that answers a refusal instead of raising, whatever the request holds."""

    @wraps(check)
    def guarded(*args: Any, **kwargs: Any) -> str | None:
        try:
            return check(*args, **kwargs)
        except Exception:  # noqa: BLE001 - an unreadable credential is a refusal, never a 500
            log.warning("webhook credentials unreadable in %s", check.__name__, exc_info=True)
            return "unreadable credentials"

    return guarded  # type: ignore[return-value]


def setting(name: str, default: str = "") -> str:
    """A webhook setting from the app config, else the environment (so it can be set either way)."""
    value = current_app.config.get(name)
    if value in (None, ""):
        value = os.environ.get(name, default)
    return str(value)


def _ascii(value: Any, limit: int = MAX_SIGNATURE_CHARS) -> bytes | None:
    """A header or field as ASCII bytes, or None when it is not a short printable ASCII string."""
    if not isinstance(value, str) or not value or len(value) > limit or not value.isascii():
        return None
    if not value.isprintable():
        return None
    return value.encode("ascii")


@never_raises
def check_basic_auth(user_setting: str = "SENDBOARD_WEBHOOK_BASIC_USER",
                     password_setting: str = "SENDBOARD_WEBHOOK_BASIC_PASSWORD") -> str | None:
    """HTTP basic auth against SENDBOARD_WEBHOOK_BASIC_USER / _PASSWORD (or the named pair)."""
    user = setting(user_setting)
    password = setting(password_setting)
    if not user or not password:
        return "basic auth is not configured"
    given = request.authorization
    if given is None or given.type != "basic":
        return "missing credentials"
    given_user = (given.username or "").encode("utf-8", "surrogatepass")
    given_password = (given.password or "").encode("utf-8", "surrogatepass")
    ok_user = hmac.compare_digest(given_user, user.encode("utf-8", "surrogatepass"))
    ok_pass = hmac.compare_digest(given_password, password.encode("utf-8", "surrogatepass"))
    return None if ok_user and ok_pass else "wrong credentials"


@never_raises
def check_postmark() -> str | None:
    """Postmark sends the basic auth credentials set on its webhook: POSTMARK_WEBHOOK_USER /
    _PASSWORD, or the shared SENDBOARD_WEBHOOK_BASIC_USER / _PASSWORD when those are not set."""
    if setting("POSTMARK_WEBHOOK_USER") or setting("POSTMARK_WEBHOOK_PASSWORD"):
        return check_basic_auth("POSTMARK_WEBHOOK_USER", "POSTMARK_WEBHOOK_PASSWORD")
    return check_basic_auth()


@never_raises
def check_brevo() -> str | None:
    """BREVO_WEBHOOK_TOKEN, sent by Brevo as ``Authorization: Bearer <token>`` (its webhook's
    bearer authentication), or as a ``token`` query parameter of the webhook URL."""
    expected = setting("BREVO_WEBHOOK_TOKEN")
    if not expected:
        return "brevo token is not configured"
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not given:
        given = request.args.get("token", "")
    raw = _ascii(given, 512)
    if raw is None:
        return "missing token"
    if not hmac.compare_digest(raw, expected.encode("utf-8", "surrogatepass")):
        return "wrong token"
    return None


_UNIX_TIME = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,9})?$")


def _fresh(timestamp: Any, now: float | None = None) -> bool:
    """True for unix seconds (digits, an optional fraction) within MAX_SKEW_SECONDS of now."""
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp) if abs(timestamp) < 10**12 else ""
    if not isinstance(timestamp, str) or not _UNIX_TIME.match(timestamp):
        return False
    ts = float(timestamp)
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


@never_raises
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
        raw_signature = _ascii(signature)
        if raw_signature is None:
            return "bad signature"
        try:
            public_key = _load_sendgrid_key(key)
            public_key.verify(base64.b64decode(raw_signature, validate=True),
                              timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            return "bad signature"
        return None
    return check_basic_auth()


# ---------------------------------------------------------------- Mailgun


@never_raises
def check_mailgun(signature: Any) -> str | None:
    """HMAC-SHA256 of timestamp + token with the signing key; stale or replayed tokens refused."""
    key = setting("MAILGUN_WEBHOOK_SIGNING_KEY")
    if not key:
        return "mailgun signing key is not configured"
    if not isinstance(signature, dict):
        return "missing signature"
    raw_ts = signature.get("timestamp")
    if isinstance(raw_ts, int) and not isinstance(raw_ts, bool) and 0 <= raw_ts < 10**12:
        raw_ts = str(raw_ts)
    timestamp = _ascii(raw_ts, 32)
    token = _ascii(signature.get("token"), 256)
    given = _ascii(signature.get("signature"), 256)
    if timestamp is None or token is None or given is None:
        return "missing signature"
    expected = hmac.new(key.encode("utf-8", "surrogatepass"), timestamp + token,
                        hashlib.sha256).hexdigest().encode("ascii")
    if not hmac.compare_digest(expected, given):
        return "bad signature"
    if not _fresh(timestamp.decode("ascii")):
        return "stale timestamp"
    if not remember_token(f"mailgun:{token.decode('ascii')}"):
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
SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
# Fields SNS sends as strings (or null); anything else is not an SNS message.
SNS_STRING_FIELDS = tuple(sorted({*_SNS_NOTIFICATION_KEYS, *_SNS_SUBSCRIPTION_KEYS,
                                  "Signature", "SignatureVersion", "SigningCertURL",
                                  "UnsubscribeURL"}))
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]{1,40}):[0-9]{1,20}:[A-Za-z0-9_.-]{1,256}$")
_SNS_HOST = re.compile(r"^sns\.([a-z0-9-]{1,40})\.amazonaws\.com$")


def sns_shape_error(message: Any) -> str | None:
    """Why a parsed body is not an SNS message (a JSON object of string fields), else None."""
    if not isinstance(message, dict):
        return "not an SNS message"
    if message.get("Type") not in SNS_TYPES:
        return "not an SNS message type"
    for key in SNS_STRING_FIELDS:  # null is absent (sns_string_to_sign leaves it out)
        if message.get(key) is not None and not isinstance(message[key], str):
            return f"SNS field {key} is not a string"
    return None


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical text SNS signs: selected fields as "name\\nvalue\\n", in this order."""
    keys = (_SNS_NOTIFICATION_KEYS if message.get("Type") == "Notification"
            else _SNS_SUBSCRIPTION_KEYS)
    parts = []
    for key in keys:
        if key in message and message[key] is not None:
            parts.append(f"{key}\n{message[key]}\n")
    return "".join(parts).encode()


@never_raises
def check_ses(message: dict[str, Any]) -> str | None:
    """The SNS signature against the configured certificate (SES_SNS_CERT_PEM), else basic auth.

    The certificate is configured rather than fetched from SigningCertURL, so a forged message
    cannot point us at a certificate of its own choosing, and no request leaves the server.
    SignatureVersion 1 is RSA with SHA-1, version 2 RSA with SHA-256; any other is refused.
    """
    pem = setting("SES_SNS_CERT_PEM")
    if not pem:
        return check_basic_auth()
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if sns_shape_error(message):
        return "not a signed SNS message"
    if not pem.lstrip().startswith("-----BEGIN") and os.path.exists(pem):
        with open(pem, "rb") as fh:
            pem = fh.read().decode()
    version = message.get("SignatureVersion", "1")
    if version not in ("1", "2"):
        return "unknown SNS SignatureVersion"
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303 (SNS v1)
    signature = _ascii(message.get("Signature"), 4096)
    if signature is None:
        return "bad SNS signature"
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        cert.public_key().verify(  # type: ignore[union-attr,call-arg]
            base64.b64decode(signature, validate=True),
            sns_string_to_sign(message), padding.PKCS1v15(), algorithm,
        )
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return "bad SNS signature"
    return None


def sns_topics() -> frozenset[str]:
    """The allow-list SES_SNS_TOPIC_ARNS: topic ARNs, comma-separated (or a list in config)."""
    raw: Any = current_app.config.get("SES_SNS_TOPIC_ARNS")
    if raw in (None, "", [], ()):
        raw = os.environ.get("SES_SNS_TOPIC_ARNS", "")
    items = raw.split(",") if isinstance(raw, str) else [str(item) for item in raw]
    return frozenset(item.strip() for item in items if item.strip())


def _sns_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 40 or not value.isascii():
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return None if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


@never_raises
def check_sns_rules(message: dict[str, Any], *, signed: bool,
                    now: float | None = None) -> str | None:
    """What SNS messages are accepted beyond their signature: a fresh Timestamp (at most an hour
    old, a few minutes ahead), and a TopicArn on SES_SNS_TOPIC_ARNS.

    With SNS signatures in use (`signed`), an empty allow-list refuses every message: a valid
    signature only proves that *some* AWS account's topic sent it. With basic auth the shared
    credentials already name the sender, and an empty allow-list admits any topic.
    """
    moment = _sns_time(message.get("Timestamp"))
    if moment is None:
        return "SNS message without a valid Timestamp"
    age = (time.time() if now is None else now) - moment.timestamp()
    if age > SNS_MAX_AGE_SECONDS:
        return "SNS message older than an hour"
    if age < -SNS_MAX_AHEAD_SECONDS:
        return "SNS message dated in the future"
    topics = sns_topics()
    topic = message.get("TopicArn")
    if not topics:
        if signed:
            log.error("SES/SNS message refused: SES_SNS_TOPIC_ARNS is empty; set it to the "
                      "topic ARN(s) SES publishes to (comma-separated) to accept them")
            return "no SNS topic is allowed (SES_SNS_TOPIC_ARNS is empty)"
        return None
    if topic not in topics:
        return "SNS topic not allowed"
    return None


def subscribe_url_ok(url: Any, topic_arn: Any) -> bool:
    """True for an https URL on sns.<region>.amazonaws.com, the region of the topic: the only
    address a SubscriptionConfirmation may make us fetch."""
    if not isinstance(url, str) or len(url) > 4096 or not url.isascii() or not url.isprintable():
        return False
    topic = _TOPIC_ARN.match(topic_arn) if isinstance(topic_arn, str) else None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = _SNS_HOST.match(parts.netloc)  # netloc, not hostname: no user, password or port
    return (parts.scheme == "https" and host is not None and port is None
            and topic is not None and host.group(1) == topic.group(1))


# ---------------------------------------------------------------- generic


def generic_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Sendboard-Signature value for a body: sha256=<hex HMAC of "timestamp." + body>."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@never_raises
def check_generic(body: bytes) -> str | None:
    """HMAC-SHA256 with GENERIC_WEBHOOK_SECRET over the timestamp and the raw body."""
    secret = setting("GENERIC_WEBHOOK_SECRET")
    if not secret:
        return "generic webhook secret is not configured"
    timestamp = request.headers.get("X-Sendboard-Timestamp", "")
    given = request.headers.get("X-Sendboard-Signature", "")
    if not timestamp or not given:
        return "missing X-Sendboard-Timestamp or X-Sendboard-Signature"
    raw_ts, raw_given = _ascii(timestamp, 32), _ascii(given)
    if raw_ts is None or raw_given is None:
        return "bad signature"
    mac = hmac.new(secret.encode("utf-8", "surrogatepass"), raw_ts + b"." + body, hashlib.sha256)
    if not hmac.compare_digest(("sha256=" + mac.hexdigest()).encode("ascii"), raw_given):
        return "bad signature"
    if not _fresh(timestamp):
        return "stale timestamp"
    return None

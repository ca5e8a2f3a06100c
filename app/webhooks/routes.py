"""Provider event webhooks: /webhooks/sendgrid, /mailgun, /ses and /generic.

Each request is authenticated (401 otherwise), parsed whole (400 on anything malformed, nothing
applied), then applied as one batch in one transaction. Answers are JSON:
``{"received": n, "applied": n, "duplicates": n, "unmatched": n}`` or ``{"error": "..."}``.

Generic format (for any provider or script)::

    POST /webhooks/generic
    X-Sendboard-Timestamp: 1795430400            (unix seconds; refused if >5 min off)
    X-Sendboard-Signature: sha256=<hex HMAC-SHA256(GENERIC_WEBHOOK_SECRET, "<timestamp>." + body)>
    Content-Type: application/json

    {"events": [                                 (or a bare JSON array)
      {"event": "delivered",                     sent | delivered | deferred | open | click |
                                                 bounce (classified by status/diagnostic) |
                                                 soft_bounce | hard_bounce | blocked | dropped |
                                                 spam (or complaint) | unsubscribed (or
                                                 unsubscribe) | resubscribed | unknown
       "timestamp": 1795430400,                  unix seconds or ISO 8601 with a zone
       "rid": "<token>",                         our token (X-Sendboard-Rid), or
       "message_id": "<r1.ab@sendboard.local>",  our Message-ID (brackets optional)
       "id": "evt-123",                          your event id: repeats are ignored (optional)
       "status": "5.1.1", "diagnostic": "...",   bounces
       "url": "https://...",                     clicks
       "machine": false,                         opens/clicks by a proxy or scanner
       "scope": "all"}                           unsubscribe: "all" or "type" (the mailing's)
    ]}
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, request

from app.extensions import csrf
from app.services.responses import apply_events
from app.webhooks import auth, parsers
from app.webhooks.parsers import PayloadError
from app.webhooks.tokens import token_reader

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)  # providers post without a session; each endpoint checks its own signature
log = logging.getLogger(__name__)


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _refuse(provider: str, reason: str) -> Response:
    log.warning("webhook %s refused (401): %s from %s", provider, reason, request.remote_addr)
    return _json(401, {"error": "unauthorized", "reason": reason})


def _malformed(provider: str, reason: str) -> Response:
    log.warning("webhook %s malformed (400): %s", provider, reason)
    return _json(400, {"error": "malformed", "reason": reason})


def _apply(provider: str, events: list[Any]) -> Response:
    result = apply_events(events)
    summary = result.summary()
    log.info("webhook %s: %s", provider, summary)
    return _json(200, summary)


@bp.post("/sendgrid")
def sendgrid() -> Response:
    """SendGrid Event Webhook (signed with ECDSA, or basic auth)."""
    body = request.get_data(cache=True)
    reason = auth.check_sendgrid(body)
    if reason:
        return _refuse("sendgrid", reason)
    try:
        events = parsers.sendgrid(parsers.load_json(body), token_reader())
    except PayloadError as exc:
        return _malformed("sendgrid", str(exc))
    return _apply("sendgrid", events)


@bp.post("/mailgun")
def mailgun() -> Response:
    """Mailgun webhooks: {"signature": {...}, "event-data": {...}}."""
    body = request.get_data(cache=True)
    try:
        payload = parsers.load_json(body)
    except PayloadError as exc:
        # Without a body we cannot even read the signature: unauthenticated as much as malformed.
        return _refuse("mailgun", str(exc))
    if not isinstance(payload, dict):
        return _refuse("mailgun", "missing signature")
    reason = auth.check_mailgun(payload.get("signature"))
    if reason:
        return _refuse("mailgun", reason)
    try:
        events = parsers.mailgun(payload.get("event-data"), token_reader())
    except PayloadError as exc:
        return _malformed("mailgun", str(exc))
    return _apply("mailgun", events)


@bp.post("/ses")
def ses() -> Response:
    """Amazon SES notifications delivered by SNS (signature checked against a configured cert)."""
    body = request.get_data(cache=True)
    try:
        message = parsers.load_json(body)
        if not isinstance(message, dict) or not isinstance(message.get("Type"), str):
            raise PayloadError("not an SNS message")
    except PayloadError as exc:
        reason = auth.check_basic_auth() if not auth.setting("SES_SNS_CERT_PEM") else "unsigned"
        if reason:
            return _refuse("ses", reason)
        return _malformed("ses", str(exc))
    reason = auth.check_ses(message)
    if reason:
        return _refuse("ses", reason)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        # Confirming means visiting the URL; an operator does it once (we never fetch it here).
        log.warning("SES/SNS subscription to %s awaits confirmation: visit %s",
                    message.get("TopicArn"), message.get("SubscribeURL"))
        return _json(200, {"subscription": "logged", "SubscribeURL": message.get("SubscribeURL")})
    if kind == "UnsubscribeConfirmation":
        log.warning("SES/SNS topic %s unsubscribed this endpoint", message.get("TopicArn"))
        return _json(200, {"unsubscribe": "logged"})
    if kind != "Notification":
        return _malformed("ses", f"unknown SNS message type {kind[:40]!r}")
    try:
        inner = message.get("Message")
        notification = parsers.load_json(inner.encode() if isinstance(inner, str) else b"")
        events = parsers.ses(notification, str(message.get("MessageId", "")), token_reader())
    except PayloadError as exc:
        return _malformed("ses", str(exc))
    return _apply("ses", events)


@bp.post("/generic")
def generic() -> Response:
    """Sendboard's documented JSON format (see the module docstring)."""
    body = request.get_data(cache=True)
    reason = auth.check_generic(body)
    if reason:
        return _refuse("generic", reason)
    try:
        events = parsers.generic(parsers.load_json(body), token_reader())
    except PayloadError as exc:
        return _malformed("generic", str(exc))
    return _apply("generic", events)

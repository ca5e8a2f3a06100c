"""Provider event webhooks: /webhooks/sendgrid, /mailgun, /ses, /postmark, /brevo and /generic.

Each request is at most MAX_WEBHOOK_BYTES (10 MB; 413 above, from Content-Length or while
reading, before anything is parsed), authenticated (401 otherwise), parsed whole (400 on anything
malformed, whatever the parser meets; nothing applied), then applied as one batch in one
transaction. No body, header or signature makes an endpoint answer 5xx. Answers are JSON:
``{"received": n, "applied": n, "duplicates": n, "unmatched": n}`` or ``{"error": "..."}``.

SES through SNS: besides the signature (or basic auth), a message must be at most an hour old
(SNS retries a delivery for up to an hour; 5 minutes ahead allowed for clock drift) and come from
a topic on SES_SNS_TOPIC_ARNS (comma-separated). With SNS signatures in use and that list empty,
every message is refused (and the log says why) until the topics are configured. A signed
SubscriptionConfirmation from an allowed topic is confirmed by fetching its SubscribeURL, only if
that is an https URL on sns.<region>.amazonaws.com for the topic's region; an
UnsubscribeConfirmation is acknowledged and nothing else.

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
                                                 (from 2000 to a day ahead)
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
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.extensions import csrf, db
from app.services.responses import Event, EventError, apply_events
from app.webhooks import auth, parsers
from app.webhooks.parsers import PayloadError, clean_text
from app.webhooks.tokens import token_reader

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
csrf.exempt(bp)  # providers post without a session; each endpoint checks its own signature
log = logging.getLogger(__name__)

# Far above any provider's batch (SendGrid posts up to a few MB); the app-wide upload limit
# (MAX_CONTENT_LENGTH, for the CSV import) does not apply here.
MAX_WEBHOOK_BYTES = 10 * 1024 * 1024
# Settings of the providers added here, for the settings page's list of webhook secrets.
SECRET_NAMES = ("POSTMARK_WEBHOOK_USER", "POSTMARK_WEBHOOK_PASSWORD", "BREVO_WEBHOOK_TOKEN")
SUBSCRIBE_FETCHER = "sendboard.sns_subscribe_fetcher"  # app.extensions key; tests put a fake
SubscribeFetcher = Callable[[str], bool]


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _provider() -> str:
    return (request.endpoint or "webhooks").rpartition(".")[2]


def _refuse(provider: str, reason: str) -> Response:
    reason = clean_text(reason)
    log.warning("webhook %s refused (401): %s from %s", provider, reason, request.remote_addr)
    return _json(401, {"error": "unauthorized", "reason": reason})


def _malformed(provider: str, reason: str) -> Response:
    reason = clean_text(reason)
    log.warning("webhook %s malformed (400): %s", provider, reason)
    return _json(400, {"error": "malformed", "reason": reason})


def _unreadable(exc: Exception) -> str:
    """Why a payload could not be read, for the 400 answer (never a 500)."""
    if isinstance(exc, PayloadError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "payload nested too deeply"
    return f"unreadable payload ({type(exc).__name__})"


def _parse(provider: str, read: Callable[[], list[Event]]) -> list[Event] | Response:
    """The events of a payload, or the 400 answer: any error while reading it is the payload's."""
    try:
        return read()
    except PayloadError as exc:
        return _malformed(provider, str(exc))
    except Exception as exc:  # noqa: BLE001 - RecursionError, ValueError, TypeError, ...
        log.warning("webhook %s payload raised %s while being read", provider,
                    type(exc).__name__, exc_info=True)
        return _malformed(provider, _unreadable(exc))


def _apply(provider: str, events: list[Event] | Response) -> Response:
    if isinstance(events, Response):
        return events
    try:
        result = apply_events(events)
    except EventError as exc:  # the parsers check every event first; this is a second guard
        return _malformed(provider, str(exc))
    db.session.commit()
    summary = result.summary()
    log.info("webhook %s: %s", provider, summary)
    return _json(200, summary)


@bp.before_request
def _limit_body() -> Response | None:
    """At most MAX_WEBHOOK_BYTES per request: Content-Length is checked before anything is
    read, and the stream is cut while reading (a body sent without a length)."""
    request.max_content_length = MAX_WEBHOOK_BYTES
    length = request.content_length
    if length is not None and length > MAX_WEBHOOK_BYTES:
        return _too_large()
    return None


def _too_large() -> Response:
    log.warning("webhook %s refused (413): body over %d bytes from %s", _provider(),
                MAX_WEBHOOK_BYTES, request.remote_addr)
    return _json(413, {"error": "too large", "limit": MAX_WEBHOOK_BYTES})


@bp.errorhandler(RequestEntityTooLarge)
def _too_large_while_reading(exc: RequestEntityTooLarge) -> Response:
    return _too_large()


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response | HTTPException:
    """A request the server could not read (a client that hung up mid-body): JSON, as the rest."""
    code = exc.code or 500
    if code >= 500:
        return exc
    log.warning("webhook %s refused (%d): %s", _provider(), code, exc.description)
    return _json(code, {"error": exc.name.lower()})


def _body() -> bytes:
    return request.get_data(cache=True)  # RequestEntityTooLarge past MAX_WEBHOOK_BYTES


@bp.post("/sendgrid")
def sendgrid() -> Response:
    """SendGrid Event Webhook (signed with ECDSA, or basic auth)."""
    body = _body()
    reason = auth.check_sendgrid(body)
    if reason:
        return _refuse("sendgrid", reason)
    return _apply("sendgrid", _parse(
        "sendgrid", lambda: parsers.sendgrid(parsers.load_json(body), token_reader())))


@bp.post("/mailgun")
def mailgun() -> Response:
    """Mailgun webhooks: {"signature": {...}, "event-data": {...}}."""
    body = _body()
    try:
        payload = parsers.load_json(body)
    except Exception as exc:  # noqa: BLE001 - whatever the body holds
        # Without a body we cannot even read the signature: unauthenticated as much as malformed.
        return _refuse("mailgun", _unreadable(exc))
    if not isinstance(payload, dict):
        return _refuse("mailgun", "missing signature")
    reason = auth.check_mailgun(payload.get("signature"))
    if reason:
        return _refuse("mailgun", reason)
    return _apply("mailgun", _parse(
        "mailgun", lambda: parsers.mailgun(payload.get("event-data"), token_reader())))


def _default_fetch(url: str) -> bool:
    """GET the SubscribeURL (already checked to be https on an SNS host), no redirects."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as answer:  # noqa: S310 - https on an SNS host only
            answer.read(65536)
            return bool(answer.status == 200)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log.error("SES/SNS subscription could not be confirmed: %s", exc)
        return False


def _confirm_subscription(message: dict[str, Any]) -> Response:
    topic, url = message.get("TopicArn"), message.get("SubscribeURL")
    if not auth.subscribe_url_ok(url, topic):
        return _malformed("ses", "SubscribeURL is not https on sns.<region>.amazonaws.com "
                                 "for the topic's region")
    if topic not in auth.sns_topics():
        # Basic auth without an allow-list: nothing names the topic, so an operator confirms.
        log.warning("SES/SNS subscription to %s awaits confirmation: add the topic to "
                    "SES_SNS_TOPIC_ARNS, or visit %s", clean_text(str(topic)), url)
        return _json(200, {"subscription": "logged"})
    fetch: SubscribeFetcher = current_app.extensions.get(SUBSCRIBE_FETCHER, _default_fetch)
    try:
        confirmed = bool(fetch(str(url)))
    except Exception:  # noqa: BLE001 - the network, not the request, failed
        log.exception("SES/SNS subscription to %s could not be confirmed", topic)
        confirmed = False
    if not confirmed:
        log.error("SES/SNS subscription to %s not confirmed; visit %s", topic, url)
        # 200 all the same: SNS does not resend a confirmation, and the log tells what to do.
        return _json(200, {"subscription": "not confirmed"})
    log.info("SES/SNS subscription to %s confirmed", topic)
    return _json(200, {"subscription": "confirmed"})


@bp.post("/ses")
def ses() -> Response:
    """Amazon SES notifications delivered by SNS (signature checked against a configured cert)."""
    body = _body()
    signed = bool(auth.setting("SES_SNS_CERT_PEM"))
    message: Any = None
    try:
        message = parsers.load_json(body)
        shape = auth.sns_shape_error(message)
    except Exception as exc:  # noqa: BLE001 - whatever the body holds
        shape = _unreadable(exc)
    if shape:
        if signed:
            return _refuse("ses", f"unsigned: {shape}")
        reason = auth.check_basic_auth()
        return _refuse("ses", reason) if reason else _malformed("ses", shape)
    reason = auth.check_ses(message) or auth.check_sns_rules(message, signed=signed)
    if reason:
        return _refuse("ses", reason)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        return _confirm_subscription(message)
    if kind == "UnsubscribeConfirmation":
        log.warning("SES/SNS topic %s unsubscribed this endpoint",
                    clean_text(message.get("TopicArn") or ""))
        return _json(200, {"unsubscribe": "acknowledged"})
    inner = message.get("Message")
    sns_id = message.get("MessageId") or ""
    return _apply("ses", _parse("ses", lambda: parsers.ses(
        parsers.load_json(inner if isinstance(inner, str) else ""), sns_id, token_reader())))


@bp.post("/postmark")
def postmark() -> Response:
    """Postmark webhooks (basic auth): Delivery, Bounce, SpamComplaint, Open, Click and
    SubscriptionChange records, one per request."""
    body = _body()
    reason = auth.check_postmark()
    if reason:
        return _refuse("postmark", reason)
    return _apply("postmark", _parse(
        "postmark", lambda: parsers.postmark(parsers.load_json(body), token_reader())))


@bp.post("/brevo")
def brevo() -> Response:
    """Brevo transactional webhooks (a bearer token, or ?token= in the URL)."""
    body = _body()
    reason = auth.check_brevo()
    if reason:
        return _refuse("brevo", reason)
    return _apply("brevo", _parse(
        "brevo", lambda: parsers.brevo(parsers.load_json(body), token_reader())))


@bp.post("/generic")
def generic() -> Response:
    """Sendboard's documented JSON format (see the module docstring)."""
    body = _body()
    reason = auth.check_generic(body)
    if reason:
        return _refuse("generic", reason)
    return _apply("generic", _parse(
        "generic", lambda: parsers.generic(parsers.load_json(body), token_reader())))

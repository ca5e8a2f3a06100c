"""Provider payloads to response events. The whole payload is parsed before anything is applied:
one malformed event refuses the request (PayloadError -> 400) and nothing is half-applied.

Recipients are found by our token (the ``sb_rid`` custom argument or the X-Sendboard-Rid header)
or by our Message-ID (angle brackets stripped). Event types a provider may add later are skipped,
not refused, so the provider does not retry a payload we can never accept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.domain.bounces import Reason, Verdict, classify
from app.domain.responses import Response
from app.services.responses import (
    CLICK,
    DEFERRED,
    KINDS,
    OPEN,
    RESUBSCRIBED,
    Event,
    EventError,
    check_event,
    normalize_message_id,
)

TokenReader = Callable[[str], int | None]
MAX_EVENTS = 10_000


class PayloadError(ValueError):
    """A payload we cannot read; the message says where."""


def _time(value: Any, where: str) -> datetime:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: timestamp is not a time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError(f"{where}: timestamp out of range") from exc
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PayloadError(f"{where}: timestamp {value[:40]!r} is not ISO 8601") from exc
        if moment.tzinfo is None:
            raise PayloadError(f"{where}: timestamp has no time zone")
        return moment.astimezone(UTC)
    raise PayloadError(f"{where}: missing timestamp")


def _str(value: Any, limit: int = 2000) -> str:
    return "" if value is None else str(value)[:limit]


def _recipient(token: Any, message_id: Any, read_token: TokenReader) -> dict[str, Any]:
    rid = read_token(token) if isinstance(token, str) and token else None
    if rid is not None:
        return {"recipient_id": rid}
    mid = normalize_message_id(message_id) if isinstance(message_id, str) else None
    return {"message_id": mid}


def _event(where: str, **fields: Any) -> Event:
    event = Event(**fields)
    try:
        check_event(event)
    except EventError as exc:
        raise PayloadError(f"{where}: {exc}") from exc
    return event


def load_json(body: bytes) -> Any:
    """The body as JSON, or PayloadError."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from exc


def _list_of_dicts(payload: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(payload, list):
        raise PayloadError(f"{what}: expected a JSON array of events")
    if len(payload) > MAX_EVENTS:
        raise PayloadError(f"{what}: more than {MAX_EVENTS} events in one request")
    for i, item in enumerate(payload):
        if not isinstance(item, dict):
            raise PayloadError(f"event {i}: expected an object")
    return payload


# ---------------------------------------------------------------- SendGrid

_SG_SIMPLE = {
    "processed": Response.SENT.value,
    "delivered": Response.DELIVERED.value,
    "deferred": DEFERRED,
    "dropped": Response.DROPPED.value,
    "spamreport": Response.SPAM.value,
    "open": OPEN,
    "click": CLICK,
    "unsubscribe": Response.UNSUBSCRIBED.value,
    "group_unsubscribe": Response.UNSUBSCRIBED.value,
    "group_resubscribe": RESUBSCRIBED,
}


def _bounce_kind(verdict: Verdict) -> str:
    """The event kind for a provider's bounce: hard only for a permanently bad address."""
    return (verdict.response or Response.SOFT_BOUNCE).value


def _verdict_detail(verdict: Verdict) -> dict[str, Any]:
    return {"bounce_reason": verdict.reason.value, "permanent": verdict.permanent}


def sendgrid(payload: Any, read_token: TokenReader) -> list[Event]:
    """SendGrid Event Webhook: a JSON array; custom args (unique_args) sit on each event."""
    out = []
    for i, item in enumerate(_list_of_dicts(payload, "sendgrid")):
        where = f"event {i}"
        name = item.get("event")
        if not isinstance(name, str):
            raise PayloadError(f"{where}: missing event")
        when = _time(item.get("timestamp"), where)
        detail: dict[str, Any] = {}
        if name == "bounce":
            status, reason = _str(item.get("status"), 20), _str(item.get("reason"))
            bounce_type = item.get("type", "bounce")
            verdict = classify(status, reason, action="failed")
            kind = (Response.BLOCKED.value if bounce_type == "blocked" and not verdict.permanent
                    else _bounce_kind(verdict))
            detail = {"status": status, "diagnostic": reason, "type": _str(bounce_type, 20),
                      **_verdict_detail(verdict)}
        elif name in _SG_SIMPLE:
            kind = _SG_SIMPLE[name]
            if name in ("dropped", "deferred"):
                detail = {"reason": _str(item.get("reason") or item.get("response"))}
            elif name == "click":
                detail = {"url": _str(item.get("url"), 500)}
            elif name.startswith("group_"):
                detail = {"scope": "type", "asm_group_id": item.get("asm_group_id")}
        else:
            continue  # a type added after this code was written
        unique = item.get("unique_args") if isinstance(item.get("unique_args"), dict) else {}
        token = item.get("sb_rid") or unique.get("sb_rid")
        # smtp-id is our Message-ID header as SendGrid received it, with angle brackets.
        target = _recipient(token, item.get("smtp-id"), read_token)
        out.append(_event(
            where, kind=kind, source="sendgrid", occurred_at=when,
            provider_event_id=_str(item.get("sg_event_id"), 255) or None,
            machine=bool(item.get("sg_machine_open")) if name == "open" else False,
            detail=detail or None, **target,
        ))
    return out


# ---------------------------------------------------------------- Mailgun


def mailgun(data: Any, read_token: TokenReader) -> list[Event]:
    """Mailgun webhooks (one "event-data" object per request)."""
    if not isinstance(data, dict):
        raise PayloadError("event-data: expected an object")
    name = data.get("event")
    if not isinstance(name, str):
        raise PayloadError("event-data: missing event")
    when = _time(data.get("timestamp"), "event-data")
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    detail: dict[str, Any] = {}
    machine = False
    if name == "failed":
        code = _str(status.get("enhanced-code") or status.get("code"), 20)
        text = _str(status.get("description") or status.get("message"))
        verdict = classify(code, text, action="failed")
        detail = {"status": code, "diagnostic": text, "reason": _str(data.get("reason"), 100),
                  **_verdict_detail(verdict)}
        if data.get("severity") == "temporary":
            kind = Response.SOFT_BOUNCE.value
        elif str(data.get("reason", "")).startswith("suppress"):
            kind = Response.DROPPED.value  # Mailgun refused: a suppressed address
        else:
            # Mailgun gave up: its own word is the only evidence when the reply says nothing.
            kind = (Response.HARD_BOUNCE.value if verdict.reason is Reason.UNDEFINED
                    else _bounce_kind(verdict))
    elif name in ("accepted", "delivered", "opened", "clicked", "complained", "unsubscribed",
                  "rejected"):
        kind = {
            "accepted": Response.SENT.value, "delivered": Response.DELIVERED.value,
            "opened": OPEN, "clicked": CLICK, "complained": Response.SPAM.value,
            "unsubscribed": Response.UNSUBSCRIBED.value, "rejected": Response.DROPPED.value,
        }[name]
        if name == "clicked":
            detail = {"url": _str(data.get("url"), 500)}
        client = data.get("client-info") if isinstance(data.get("client-info"), dict) else {}
        machine = name in ("opened", "clicked") and bool(client.get("bot"))
    else:
        return []
    variables = data.get("user-variables") if isinstance(data.get("user-variables"), dict) else {}
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    target = _recipient(variables.get("sb_rid"), headers.get("message-id"), read_token)
    return [_event("event-data", kind=kind, source="mailgun", occurred_at=when,
                   provider_event_id=_str(data.get("id"), 255) or None, machine=machine,
                   detail=detail or None, **target)]


# ---------------------------------------------------------------- SES


def _ses_headers(mail: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("name"), str):
            out[header["name"].lower()] = _str(header.get("value"), 1000)
    return out


def ses(notification: Any, sns_message_id: str, read_token: TokenReader) -> list[Event]:
    """One SES notification (the JSON inside an SNS Notification's Message)."""
    if not isinstance(notification, dict):
        raise PayloadError("Message: expected a JSON object")
    name = notification.get("eventType") or notification.get("notificationType")
    mail = notification.get("mail")
    if not isinstance(name, str) or not isinstance(mail, dict):
        raise PayloadError("Message: missing eventType/notificationType or mail")
    headers = _ses_headers(mail)
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    # SES may put its own Message-ID on the wire; our token header survives either way.
    target = _recipient(headers.get("x-sendboard-rid"),
                        headers.get("message-id") or common.get("messageId"), read_token)
    section_name = {"DeliveryDelay": "deliveryDelay"}.get(name, name[:1].lower() + name[1:])
    section = notification.get(section_name)
    section = section if isinstance(section, dict) else {}
    when_raw = section.get("timestamp") or mail.get("timestamp")
    when = _time(when_raw, "Message")
    detail: dict[str, Any] = {}
    machine = False
    if name == "Bounce":
        people = section.get("bouncedRecipients") or [{}]
        first = people[0] if isinstance(people, list) and isinstance(people[0], dict) else {}
        status, diag = _str(first.get("status"), 20), _str(first.get("diagnosticCode"))
        bounce_type = section.get("bounceType")
        verdict = classify(status, diag, action="failed")
        if bounce_type == "Permanent":
            # "NoEmail" is SES saying the address does not exist; with no reply to read, its
            # permanent verdict is the only evidence.
            no_email = section.get("bounceSubType") == "NoEmail"
            kind = (Response.HARD_BOUNCE.value if no_email or verdict.reason is Reason.UNDEFINED
                    else _bounce_kind(verdict))
        elif bounce_type == "Transient":
            kind = Response.SOFT_BOUNCE.value
        elif bounce_type == "Undetermined":
            kind = _bounce_kind(verdict)
        else:
            raise PayloadError("Message: bounce without a known bounceType")
        detail = {"status": status, "diagnostic": diag, "type": _str(bounce_type, 20),
                  "subtype": _str(section.get("bounceSubType"), 40), **_verdict_detail(verdict)}
    elif name == "Complaint":
        if section.get("complaintFeedbackType") == "not-spam":
            return []
        kind = Response.SPAM.value
        detail = {"feedback_type": _str(section.get("complaintFeedbackType"), 40)}
    elif name in ("Delivery", "Send", "Reject", "Open", "Click", "DeliveryDelay"):
        kind = {"Delivery": Response.DELIVERED.value, "Send": Response.SENT.value,
                "Reject": Response.DROPPED.value, "Open": OPEN, "Click": CLICK,
                "DeliveryDelay": DEFERRED}[name]
        if name == "Reject":
            detail = {"reason": _str(section.get("reason"))}
        elif name == "Click":
            detail = {"url": _str(section.get("link"), 500)}
        elif name == "DeliveryDelay":
            detail = {"reason": _str(section.get("delayType"), 100)}
        if name == "Open":
            agent = _str(section.get("userAgent"), 300)
            from app.tracking.heuristics import is_machine_open

            machine = is_machine_open(agent, when)
            detail = {"user_agent": agent}
    else:
        return []
    return [_event("Message", kind=kind, source="ses", occurred_at=when,
                   provider_event_id=sns_message_id[:255] or None, machine=machine,
                   detail=detail or None, **target)]


# ---------------------------------------------------------------- generic

_GENERIC_ALIASES = {
    "complaint": Response.SPAM.value,
    "unsubscribe": Response.UNSUBSCRIBED.value,
    "resubscribe": RESUBSCRIBED,
    "opened": OPEN,
    "clicked": CLICK,
}
_ID = re.compile(r"^[\x21-\x7e]{1,255}$")


def generic(payload: Any, read_token: TokenReader) -> list[Event]:
    """Sendboard's own format (documented in app/webhooks/routes.py)."""
    if isinstance(payload, dict):
        payload = payload.get("events")
    out = []
    for i, item in enumerate(_list_of_dicts(payload, "generic")):
        where = f"event {i}"
        name = item.get("event")
        if not isinstance(name, str):
            raise PayloadError(f"{where}: missing event")
        when = _time(item.get("timestamp"), where)
        status, diag = _str(item.get("status"), 20), _str(item.get("diagnostic"))
        if name == "bounce":
            kind = _bounce_kind(classify(status, diag, action="failed"))
        else:
            kind = _GENERIC_ALIASES.get(name, name)
            if kind not in KINDS:
                raise PayloadError(f"{where}: unknown event {name[:40]!r}")
        event_id = item.get("id")
        if event_id is not None and not (isinstance(event_id, str) and _ID.match(event_id)):
            raise PayloadError(f"{where}: id must be 1-255 printable characters")
        machine = item.get("machine", False)
        if not isinstance(machine, bool):
            raise PayloadError(f"{where}: machine must be true or false")
        detail: dict[str, Any] = {}
        if status or diag:
            detail.update(status=status, diagnostic=diag)
        if item.get("url"):
            detail["url"] = _str(item.get("url"), 500)
        if item.get("scope") in ("type", "all"):
            detail["scope"] = item["scope"]
        if item.get("rid") is None and item.get("message_id") is None:
            raise PayloadError(f"{where}: give rid or message_id")
        target = _recipient(item.get("rid"), item.get("message_id"), read_token)
        out.append(_event(where, kind=kind, source="generic", occurred_at=when,
                          provider_event_id=event_id, machine=machine,
                          detail=detail or None, **target))
    return out

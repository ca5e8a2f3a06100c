"""Provider payloads to response events. The whole payload is parsed before anything is applied:
one malformed event refuses the request (PayloadError -> 400) and nothing is half-applied.

Recipients are found by our token (the ``sb_rid`` custom argument or the X-Sendboard-Rid header)
or by our Message-ID (angle brackets stripped). Event types a provider may add later are skipped,
not refused, so the provider does not retry a payload we can never accept.

Whatever the payload holds (any JSON: nested deeply, huge numbers, lone surrogates, wrong types at
any level), reading it either gives events that can be stored as they are or raises PayloadError:
text is cleaned of what no database column takes (lone surrogates, NUL), and only strings,
numbers and booleans go into an event's detail.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.bounces import REFUSAL_REASONS, Reason, Verdict, classify
from app.domain.responses import Response
from app.services.responses import (
    AUTO_REPLY,
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
# Event times a provider can mean: from 2000 until a day ahead of our clock (clocks drift).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)
MAX_MESSAGE_ID = 255  # the column's size: a longer Message-ID is none of ours


class PayloadError(ValueError):
    """A payload we cannot read; the message says where."""


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """Text any database column takes: lone surrogates become U+FFFD, NUL characters go."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATES.sub("\ufffd", value)
    return value


def _in_range(moment: datetime, where: str) -> datetime:
    if not EARLIEST <= moment <= datetime.now(UTC) + MAX_AHEAD:
        raise PayloadError(f"{where}: timestamp out of range")
    return moment


def _time(value: Any, where: str) -> datetime:
    if isinstance(value, bool):
        raise PayloadError(f"{where}: timestamp is not a time")
    if isinstance(value, int | float):
        try:
            return _in_range(datetime.fromtimestamp(float(value), UTC), where)
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError(f"{where}: timestamp out of range") from exc
    if isinstance(value, str) and value:
        if len(value) > 64:
            raise PayloadError(f"{where}: timestamp is not ISO 8601")
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PayloadError(f"{where}: timestamp {value[:40]!r} is not ISO 8601") from exc
        if moment.tzinfo is None:
            raise PayloadError(f"{where}: timestamp has no time zone")
        try:
            return _in_range(moment.astimezone(UTC), where)
        except OverflowError as exc:
            raise PayloadError(f"{where}: timestamp out of range") from exc
    raise PayloadError(f"{where}: missing timestamp")


def _str(value: Any, limit: int = 2000) -> str:
    """A text field: a string (or a number) cut to `limit`; objects and lists count as absent."""
    if isinstance(value, str):
        return clean_text(value[:limit])
    if isinstance(value, int | float) and (not isinstance(value, float) or math.isfinite(value)):
        return str(value)[:limit]
    return ""


def _small_int(value: Any) -> int | None:
    """An integer id as providers send one (a SendGrid group id), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def _recipient(token: Any, message_id: Any, read_token: TokenReader) -> dict[str, Any]:
    rid = read_token(token) if isinstance(token, str) and token else None
    if rid is not None:
        return {"recipient_id": rid}
    mid = (normalize_message_id(clean_text(message_id[:MAX_MESSAGE_ID + 10]))
           if isinstance(message_id, str) else None)
    return {"message_id": mid if mid and len(mid) <= MAX_MESSAGE_ID else None}


def _event(where: str, **fields: Any) -> Event:
    if isinstance(fields.get("provider_event_id"), str):
        fields["provider_event_id"] = clean_text(fields["provider_event_id"]) or None
    event = Event(**fields)
    try:
        check_event(event)
    except EventError as exc:
        raise PayloadError(f"{where}: {exc}") from exc
    return event


def _no_constant(name: str) -> Any:
    raise PayloadError(f"body is not JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError("body is not JSON: a number out of range")
    return value


def load_json(body: bytes | str) -> Any:
    """The body as strict JSON (no NaN or Infinity, no number out of float range), or
    PayloadError; also for nesting too deep and integers too long to read."""
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except PayloadError:
        raise
    except RecursionError as exc:
        raise PayloadError("body is not JSON we read: nested too deeply") from exc
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits
        raise PayloadError(f"body is not JSON: {str(exc)[:200]}") from exc


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
                detail = {"scope": "type", "asm_group_id": _small_int(item.get("asm_group_id"))}
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
        elif _str(data.get("reason"), 100).startswith("suppress"):
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
    headers = mail.get("headers")
    for header in headers[:1000] if isinstance(headers, list) else []:
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


# ---------------------------------------------------------------- Postmark

# Postmark's bounce types (its "Type" name and "TypeCode") and what each is here. Types that are
# not about our message reaching the recipient (a subscribe request, an open-relay test, an
# inbound processing error) are skipped.
_PM_BOUNCE_TYPES: dict[str, str | None] = {
    "HardBounce": Response.HARD_BOUNCE.value,          # 1: unknown user, mailbox not found
    "Transient": Response.SOFT_BOUNCE.value,           # 2: delayed, temporarily undeliverable
    "Unsubscribe": Response.UNSUBSCRIBED.value,        # 16: an unsubscribe or remove request
    "Subscribe": None,                                 # 32: a subscribe request by mail
    "AutoResponder": AUTO_REPLY,                       # 64: out of office, vacation
    "AddressChange": AUTO_REPLY,                       # 128: "I have a new address"
    "DnsError": Response.SOFT_BOUNCE.value,            # 256: a temporary DNS error
    "SpamNotification": Response.BLOCKED.value,        # 512: blocked or classified as spam
    "OpenRelayTest": None,                             # 1024: a test of an open relay
    "Unknown": "classify",                             # 2048: read the details
    "SoftBounce": Response.SOFT_BOUNCE.value,          # 4096: mailbox full, account disabled
    "VirusNotification": Response.BLOCKED.value,       # 8192: refused as infected
    "ChallengeVerification": AUTO_REPLY,               # 16384: a challenge-response filter
    "BadEmailAddress": Response.HARD_BOUNCE.value,     # 100000: not a valid address
    "SpamComplaint": Response.SPAM.value,              # 100001
    "ManuallyDeactivated": Response.DROPPED.value,     # 100002: deactivated in Postmark
    "Unconfirmed": Response.DROPPED.value,             # 100003: sender signature unconfirmed
    "Blocked": Response.BLOCKED.value,                 # 100006: an ISP block (content, lists)
    "SMTPApiError": Response.DELIVERY_ERROR.value,     # 100007: Postmark refused the message
    "InboundError": None,                              # 100008: about inbound processing
    "DMARCPolicy": Response.BLOCKED.value,             # 100009: refused by DMARC policy
    "TemplateRenderingFailed": Response.DELIVERY_ERROR.value,  # 100010
}
PM_TYPE_CODES: dict[int, str] = {
    1: "HardBounce", 2: "Transient", 16: "Unsubscribe", 32: "Subscribe", 64: "AutoResponder",
    128: "AddressChange", 256: "DnsError", 512: "SpamNotification", 1024: "OpenRelayTest",
    2048: "Unknown", 4096: "SoftBounce", 8192: "VirusNotification",
    16384: "ChallengeVerification", 100000: "BadEmailAddress", 100001: "SpamComplaint",
    100002: "ManuallyDeactivated", 100003: "Unconfirmed", 100006: "Blocked",
    100007: "SMTPApiError", 100008: "InboundError", 100009: "DMARCPolicy",
    100010: "TemplateRenderingFailed",
}
_RID_IN_SOURCE = re.compile(r"^X-Sendboard-Rid:[ \t]*([A-Za-z0-9_.\-]{1,200})", re.M | re.I)


def postmark_bounce_kind(bounce_type: str, details: str) -> tuple[str | None, Verdict]:
    """The event kind of a Postmark bounce type (None: skipped), and the reply's verdict.

    Unknown bounces are read from the reply. A hard or soft bounce whose reply is a refusal of
    the sender, the content or the sending IP is Blocked (`refused`); otherwise Postmark's word
    stands.
    """
    verdict = classify("", details, action="failed")
    kind = _PM_BOUNCE_TYPES.get(bounce_type, "classify")
    if kind == "classify":
        kind = _bounce_kind(verdict)
    elif kind in (Response.HARD_BOUNCE.value, Response.SOFT_BOUNCE.value):
        kind = refused(kind, verdict)
    return kind, verdict


def refused(kind: str, verdict: Verdict) -> str:
    """Blocked when a provider's bounce is, by its reply, a refusal of the sender, the content or
    the sending IP (the address may well be good); else the provider's own kind."""
    return Response.BLOCKED.value if verdict.reason in REFUSAL_REASONS else kind


def _pm_target(item: dict[str, Any], read_token: TokenReader) -> dict[str, Any]:
    """Our token from the message's metadata (sent as X-PM-Metadata-sb_rid) or, for a bounce
    with its dump, our X-Sendboard-Rid header; else Postmark's MessageID (unmatched unless it
    is ours)."""
    metadata = item.get("Metadata") if isinstance(item.get("Metadata"), dict) else {}
    token = metadata.get("sb_rid")
    if not (isinstance(token, str) and token):
        content = item.get("Content")
        found = _RID_IN_SOURCE.search(content[:200_000]) if isinstance(content, str) else None
        token = found.group(1) if found else None
    return _recipient(token, item.get("MessageID"), read_token)


def _pm_event_id(prefix: str, item: dict[str, Any], time_key: str) -> str:
    """An id for a record Postmark gives none: a resent webhook repeats it, so it is ignored."""
    who = _str(item.get("MessageID"), 100) or _str(item.get("Recipient") or item.get("Email"), 120)
    return f"{prefix}:{who}:{_str(item.get(time_key), 40)}"


def postmark(payload: Any, read_token: TokenReader) -> list[Event]:
    """One Postmark webhook record (or a list of them): Delivery, Bounce, SpamComplaint, Open,
    Click, SubscriptionChange."""
    items = payload if isinstance(payload, list) else [payload]
    out = []
    for i, item in enumerate(_list_of_dicts(items, "postmark")):
        where = f"record {i}"
        record = item.get("RecordType")
        if not isinstance(record, str):
            raise PayloadError(f"{where}: missing RecordType")
        detail: dict[str, Any] = {}
        machine = False
        if record == "Delivery":
            when = _time(item.get("DeliveredAt"), where)
            kind: str | None = Response.DELIVERED.value
            detail = {"diagnostic": _str(item.get("Details"), 500)}
            event_id = _pm_event_id("delivery", item, "DeliveredAt")
        elif record in ("Bounce", "SpamComplaint"):
            when = _time(item.get("BouncedAt"), where)
            bounce_type = _str(item.get("Type"), 40)
            code = _small_int(item.get("TypeCode"))
            if not bounce_type and code is not None:
                bounce_type = PM_TYPE_CODES.get(code, "")
            if record == "SpamComplaint":
                bounce_type = "SpamComplaint"
            # Details holds the receiving server's reply; Description only explains the type.
            details = _str(item.get("Details"))
            kind, verdict = postmark_bounce_kind(bounce_type, details)
            detail = {"type": bounce_type, "diagnostic": details, **_verdict_detail(verdict)}
            bounce_id = _str(item.get("ID"), 40)
            event_id = (f"bounce:{bounce_id}" if bounce_id
                        else _pm_event_id("bounce", item, "BouncedAt"))
        elif record in ("Open", "Click"):
            when = _time(item.get("ReceivedAt"), where)
            agent = _str(item.get("UserAgent"), 300)
            from app.tracking.heuristics import is_machine_open

            machine = is_machine_open(agent, when) if record == "Open" else False
            kind = OPEN if record == "Open" else CLICK
            detail = {"user_agent": agent}
            if record == "Click":
                detail["url"] = _str(item.get("OriginalLink"), 500)
            event_id = _pm_event_id(record.lower(), item, "ReceivedAt")
        elif record == "SubscriptionChange":
            when = _time(item.get("ChangedAt"), where)
            # Only a recipient's own unsubscribe (Postmark's unsubscribe link) is a response;
            # suppressions after a bounce or a complaint come as those records, and an
            # account's manual suppressions and reactivations are not the recipient's word.
            suppress = item.get("SuppressSending") is True
            reason = _str(item.get("SuppressionReason"), 40)
            origin = _str(item.get("Origin"), 40)
            if not (suppress and reason == "ManualSuppression" and origin == "Recipient"):
                continue
            kind = Response.UNSUBSCRIBED.value
            detail = {"scope": "all", "reason": reason, "origin": origin}
            event_id = _pm_event_id("subscription", item, "ChangedAt")
        else:
            continue  # a record type added after this code was written
        if kind is None:
            continue
        out.append(_event(where, kind=kind, source="postmark", occurred_at=when,
                          provider_event_id=event_id[:255], machine=machine,
                          detail=detail or None, **_pm_target(item, read_token)))
    return out


# ---------------------------------------------------------------- Brevo

_BREVO_KINDS = {
    "request": Response.SENT.value,
    "sent": Response.SENT.value,
    "delivered": Response.DELIVERED.value,
    "deferred": DEFERRED,
    "soft_bounce": Response.SOFT_BOUNCE.value,
    "hard_bounce": Response.HARD_BOUNCE.value,
    "invalid_email": Response.HARD_BOUNCE.value,
    # Brevo did not send: the address is on its block list (unsubscribed, complained before).
    "blocked": Response.DROPPED.value,
    "error": Response.DELIVERY_ERROR.value,
    "spam": Response.SPAM.value,
    "complaint": Response.SPAM.value,
    "opened": OPEN,
    "unique_opened": OPEN,
    "proxy_open": OPEN,
    "unique_proxy_open": OPEN,
    "click": CLICK,
    "clicked": CLICK,
    "unsubscribed": Response.UNSUBSCRIBED.value,
}
_CAMEL = re.compile(r"(?<=[a-z])([A-Z])")


def _brevo_name(value: str) -> str:
    """Brevo's event name in one spelling: "hardBounce" and "hard_bounce" alike."""
    return _CAMEL.sub(r"_\1", value[:40]).lower()


def _brevo_token(custom: Any) -> Any:
    """Our token from X-Mailin-custom: the token itself, or JSON with "sb_rid"."""
    if not isinstance(custom, str) or not custom:
        return None
    text = custom.strip()
    if text.startswith("{") and len(text) < 2000:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value.get("sb_rid") if isinstance(value, dict) else None
    return text


def _brevo_time(item: dict[str, Any], where: str) -> datetime:
    """ts_epoch (milliseconds, UTC), else ts_event or ts (seconds, UTC); never `date`, which is
    in the account's time zone without saying which."""
    epoch = item.get("ts_epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 10**11:
        return _time(epoch / 1000, where)
    for key in ("ts_event", "ts"):
        if item.get(key) is not None:
            return _time(item[key], where)
    return _time(epoch, where)


def brevo(payload: Any, read_token: TokenReader) -> list[Event]:
    """Brevo transactional webhooks: one event object per request (or a list of them)."""
    items = payload if isinstance(payload, list) else [payload]
    out = []
    for i, item in enumerate(_list_of_dicts(items, "brevo")):
        where = f"event {i}"
        raw_name = item.get("event")
        if not isinstance(raw_name, str):
            raise PayloadError(f"{where}: missing event")
        name = _brevo_name(raw_name)
        when = _brevo_time(item, where)
        kind = _BREVO_KINDS.get(name)
        if kind is None:
            continue  # a type added after this code was written
        detail: dict[str, Any] = {}
        machine = name in ("proxy_open", "unique_proxy_open")
        reason = _str(item.get("reason"))
        if name in ("soft_bounce", "hard_bounce"):
            verdict = classify("", reason, action="failed")
            kind = refused(kind, verdict)
            detail = {"diagnostic": reason, **_verdict_detail(verdict)}
        elif reason:
            detail = {"reason": reason}
        if kind == CLICK:
            detail["url"] = _str(item.get("link") or item.get("URL"), 500)
        message_id = item.get("message-id", item.get("messageId"))
        stamp = _str(item.get("ts_epoch") or item.get("ts_event") or item.get("ts"), 20)
        # Brevo's "id" is the webhook's, not the event's. An open counts once per message and
        # moment whether it came as "opened" or "unique_opened".
        family = "open" if kind == OPEN else name
        event_id = f"{family}:{_str(message_id, 150) or _str(item.get('email'), 100)}:{stamp}"
        if kind == CLICK:
            event_id += ":" + _str(item.get("link"), 40)
        out.append(_event(where, kind=kind, source="brevo", occurred_at=when,
                          provider_event_id=event_id[:255], machine=machine,
                          detail=detail or None,
                          **_recipient(_brevo_token(item.get("X-Mailin-custom")), message_id,
                                       read_token)))
    return out

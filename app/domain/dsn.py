"""Reading bounce mail: RFC 3464 delivery status notifications, RFC 5965 feedback reports (spam
complaints), and the plain-text bounces some MTAs still send (Exim, qmail, older Gmail).

Pure: bytes in, a `Report` out. Which recipient it concerns comes from our VERP return path
(``bounce+<token>@<bounce domain>``, in the envelope or the report's To/Delivered-To headers) or,
failing that, from the original Message-ID (or X-Sendboard-Rid) in the returned headers.
Classification is `app.domain.bounces.classify_status`, from the status code and the server's words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from typing import Literal

from app.domain.bounces import classify_status
from app.domain.responses import Response

Kind = Literal["bounce", "delay", "complaint", "unsubscribe", "other"]
# The mailto: List-Unsubscribe of every message: mail to its VERP address with this subject.
_UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*(?:re:\s*)?unsubscribe\b", re.I)

_TOKEN_CHARS = r"[A-Za-z0-9_.\-]+"
_ADDRESS_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To",
                    "X-Failed-Recipients")
_MESSAGE_ID = re.compile(r"^Message-I[dD]:\s*<?([^\s<>]+@[^\s<>]+)>?", re.MULTILINE | re.I)
_RID_HEADER = re.compile(r"^X-Sendboard-Rid:\s*(" + _TOKEN_CHARS + ")", re.MULTILINE | re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|failed|failure|has failed)|"
    r"returned mail|failure notice|mail delivery failed|could not be delivered|"
    r"non[- ]?delivery|nondeliverable|delivery problem",
    re.I,
)
_DELAY_TEXT = re.compile(r"\(delay\)|delayed|will (?:continue|keep) trying|not yet been delivered",
                         re.I)
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery", re.I)
# Where MTAs start quoting the original message: what follows is not the error text.
_ORIGINAL_MARKER = re.compile(
    r"^\s*-{2,}.*(?:copy of the message|original message|below this line|message follows|"
    r"undelivered message)|^\s*Original message follows|^\s*-{3,} The header of the original",
    re.I | re.MULTILINE,
)
_SMTP_REPLY_LINE = re.compile(r"(?:^|[\s:;(])([245]\d\d[\s\-][^\n]*)", re.MULTILINE)
_ENHANCED = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?![\w.]*\d)")
_QMAIL_RECIPIENT = re.compile(r"^<([^\s<>@]+@[^\s<>]+)>:\s*$", re.MULTILINE)
_FEEDBACK_TYPE = re.compile(r"^Feedback-Type:\s*([\w-]+)", re.MULTILINE | re.I)


@dataclass(frozen=True)
class Report:
    """What a bounce message says about one of our messages."""

    kind: Kind
    response: Response | None  # hard/soft bounce or blocked; spam for a complaint
    token: str | None = None  # our recipient token, from the VERP address or X-Sendboard-Rid
    original_message_id: str | None = None  # without angle brackets
    final_recipient: str | None = None
    action: str | None = None
    status: str | None = None
    diagnostic: str = ""
    feedback_type: str | None = None
    report_message_id: str | None = None  # the bounce's own Message-ID


def verp_token(address: str, prefix: str = "bounce") -> str | None:
    """The token in a VERP address ``<prefix>+<token>@domain``, or None."""
    match = re.search(re.escape(prefix) + r"\+(" + _TOKEN_CHARS + ")@", address or "", re.I)
    return match.group(1) if match else None


def _text(part: Message) -> str:
    """A leaf part's text, decoded; never raises on bad encodings."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _as_text(part: Message) -> str:
    """A part (leaf or container) flattened to text, for searching headers in it."""
    try:
        return part.as_string()
    except (UnicodeError, LookupError, ValueError, TypeError):
        return _text(part)


def _strip_type(value: str | None) -> str | None:
    """ "rfc822; a@b" -> "a@b"; "smtp; 550 ..." -> "550 ..." (RFC 3464 typed fields)."""
    if value is None:
        return None
    value = " ".join(str(value).split())
    if ";" in value:
        kind, _, rest = value.partition(";")
        if re.fullmatch(r"[\w-]+", kind.strip()):
            value = rest.strip()
    return value or None


def _walk(message: Message) -> Iterable[Message]:
    yield message
    payload = message.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _walk(sub)


def _find_token(message: Message, envelope: Sequence[str], prefix: str) -> str | None:
    for address in envelope:
        token = verp_token(address, prefix)
        if token:
            return token
    for name in _ADDRESS_HEADERS:
        for value in message.get_all(name) or []:
            token = verp_token(str(value), prefix)
            if token:
                return token
    return None


def _original(message: Message, text_after_marker: str) -> tuple[str | None, str | None]:
    """The original Message-ID and X-Sendboard-Rid token, from the returned message or headers."""
    sources: list[str] = []
    for part in _walk(message):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            sources.append(_as_text(part) if ctype == "message/rfc822" else _text(part))
    sources.append(text_after_marker)
    message_id = token = None
    for source in sources:
        if message_id is None:
            found = _MESSAGE_ID.search(source)
            message_id = found.group(1) if found else None
        if token is None:
            rid = _RID_HEADER.search(source)
            token = rid.group(1) if rid else None
    return message_id, token


def _delivery_status(message: Message) -> list[Message]:
    """The per-recipient field groups of the message/delivery-status part (RFC 3464 §2.3)."""
    groups: list[Message] = []
    for part in _walk(message):
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            groups.extend(g for g in payload if isinstance(g, Message))
        elif isinstance(payload, str):
            for block in re.split(r"\n\s*\n", payload.strip()):
                groups.append(message_from_bytes(block.encode("utf-8", "replace"),
                                                 policy=compat32))
    return [g for g in groups if g.get("Action") or g.get("Final-Recipient")
            or g.get("Status")]


def _body_text(message: Message) -> str:
    """The human-readable text of the bounce: text/plain leaves outside any returned message."""
    texts: list[str] = []

    def visit(part: Message) -> None:
        ctype = part.get_content_type()
        if ctype.startswith("message/") or ctype == "text/rfc822-headers":
            return
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    visit(sub)
        elif ctype in ("text/plain", "text/html") or not part.get_content_maintype() == "text":
            if ctype == "text/html":
                texts.append(re.sub(r"<[^>]+>", " ", _text(part)))
            elif part.get_content_maintype() in ("text", ""):
                texts.append(_text(part))
        else:
            texts.append(_text(part))

    visit(message)
    return "\n".join(texts)


def _split_original(text: str) -> tuple[str, str]:
    match = _ORIGINAL_MARKER.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start():]


def _diagnostic_from_text(text: str) -> tuple[str | None, str]:
    """(enhanced status, the server's words) from a plain-text bounce."""
    status_match = _ENHANCED.search(text)
    status = status_match.group(1) if status_match else None
    reply = _SMTP_REPLY_LINE.search(text)
    diagnostic = " ".join(reply.group(1).split()) if reply else ""
    if not diagnostic:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        diagnostic = " ".join(lines)[:1000]
    return status, diagnostic[:1000]


def parse(raw: bytes, envelope_recipients: Sequence[str] = (), *,
          verp_prefix: str = "bounce") -> Report:
    """Read one bounce, complaint or delay notice; kind "other" when it is none of those."""
    message = message_from_bytes(raw, policy=compat32)
    token = _find_token(message, envelope_recipients, verp_prefix)
    address_token = token  # the token in the address written to, not one quoted in a body
    own_id = _strip_brackets(message.get("Message-ID"))
    ctype = message.get_content_type()
    report_type = str(message.get_param("report-type", "") or "").lower()
    body = _body_text(message)
    human, after = _split_original(body)
    original_id, rid = _original(message, after)
    token = token or rid

    if ctype == "multipart/report" and report_type == "feedback-report" or any(
        p.get_content_type() == "message/feedback-report" for p in _walk(message)
    ):
        feedback = None
        for part in _walk(message):
            if part.get_content_type() == "message/feedback-report":
                found = _FEEDBACK_TYPE.search(_as_text(part))
                feedback = found.group(1).lower() if found else None
        # "not-spam" reports say the opposite of a complaint.
        is_complaint = feedback != "not-spam"
        return Report(kind="complaint" if is_complaint else "other",
                      response=Response.SPAM if is_complaint else None, token=token,
                      original_message_id=original_id, feedback_type=feedback,
                      report_message_id=own_id)

    groups = _delivery_status(message)
    if groups:
        chosen = next((g for g in groups if str(g.get("Action", "")).strip().lower() == "failed"),
                      groups[0])
        action = str(chosen.get("Action", "") or "").strip().lower() or None
        status = _strip_type(chosen.get("Status"))
        status = status if status and _ENHANCED.search(status) else None
        diagnostic = _strip_type(chosen.get("Diagnostic-Code")) or ""
        if not status and not diagnostic:
            status, diagnostic = _diagnostic_from_text(human)
        recipient = _strip_type(chosen.get("Final-Recipient") or chosen.get("Original-Recipient"))
        if action in ("delivered", "relayed", "expanded"):
            kind: Kind = "other"
        elif action == "delayed" or (status or "").startswith("4.") and action != "failed":
            kind = "delay"
        else:
            kind = "bounce"
        return Report(kind=kind,
                      response=classify_status(status, diagnostic) if kind == "bounce" else None,
                      token=token, original_message_id=original_id, final_recipient=recipient,
                      action=action, status=status, diagnostic=diagnostic[:1000],
                      report_message_id=own_id)

    subject = str(message.get("Subject", "") or "")
    if address_token and _UNSUBSCRIBE_SUBJECT.match(subject):
        # A person using the mailto: List-Unsubscribe link of a message we sent them.
        return Report(kind="unsubscribe", response=Response.UNSUBSCRIBED, token=address_token,
                      report_message_id=own_id)

    # Not a standard report: a plain-text bounce, recognised by its sender and subject.
    sender = str(message.get("From", "") or "")
    failed = message.get("X-Failed-Recipients")
    if not (failed or _BOUNCE_SUBJECT.search(subject) or
            (_DAEMON.search(sender) and _ENHANCED.search(human))):
        return Report(kind="other", response=None, token=token,
                      original_message_id=original_id, report_message_id=own_id)
    status, diagnostic = _diagnostic_from_text(human)
    recipient = str(failed).strip() if failed else None
    if recipient is None:
        qmail = _QMAIL_RECIPIENT.search(human)
        recipient = qmail.group(1) if qmail else None
    delayed = bool(_DELAY_TEXT.search(subject) or
                   (_DELAY_TEXT.search(human) and not re.search(r"permanent", human, re.I)))
    kind = "delay" if delayed and not (status or "").startswith("5.") else "bounce"
    return Report(kind=kind,
                  response=classify_status(status, diagnostic) if kind == "bounce" else None,
                  token=token, original_message_id=original_id, final_recipient=recipient,
                  status=status, diagnostic=diagnostic, report_message_id=own_id)


def _strip_brackets(value: object) -> str | None:
    if value is None:
        return None
    cleaned = str(value).strip().strip("<>").strip()
    return cleaned or None

"""Reading bounce mail: RFC 3464 delivery status notifications, RFC 5965 feedback reports and the
complaint reports of providers without them, RFC 3834 auto-replies, and the plain-text bounces many
MTAs still send (Exim, qmail, Sendmail, Exchange, older Gmail...).

Pure: bytes in, a `Report` out, never an exception. A report holds one `Verdict` per recipient it
names (`app.domain.bounces.classify` reads each failure). Which of our messages it concerns comes
from our VERP return path (``bounce+<token>@<bounce domain>``, in the envelope or the report's
To/Delivered-To headers) or, failing that, from the original Message-ID (or X-Sendboard-Rid) in
the returned headers. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.header import Header, decode_header, make_header
from email.message import Message
from email.policy import compat32
from typing import Any, Literal

from app.domain.bounces import (
    Reason,
    Verdict,
    classify,
    enhanced_code,
    reply_code,
    smtp_stage,
    words_reason,
)
from app.domain.responses import Response

Kind = Literal["bounce", "delay", "complaint", "unsubscribe", "auto_reply", "delivered", "other"]
# The mailto: List-Unsubscribe of every message: mail to its VERP address with this subject.
_UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*(?:re:\s*)?unsubscribe\b", re.I)

_TOKEN_CHARS = r"[A-Za-z0-9_.\-]+"
_ADDRESS_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To",
                    "X-Failed-Recipients")
_MESSAGE_ID = re.compile(r"^Message-I[dD]:\s*<?([^\s<>]+@[^\s<>]+)>?", re.MULTILINE | re.I)
_RID_HEADER = re.compile(r"^X-Sendboard-Rid:\s*(" + _TOKEN_CHARS + ")", re.MULTILINE | re.I)
_ORIGINAL_TO = re.compile(r"^To:[ \t]*(.*(?:\n[ \t]+.*)*)", re.MULTILINE | re.I)
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~\-]+@[\w\-]+(?:\.[\w\-]+)+")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|failed|failure|has failed|problem|"
    r"report|notification)|returned mail|failure notice|mail delivery (?:failed|failure|system)|"
    r"could not be delivered|non[- ]?delivery|nondeliverable|delivery problem|"
    r"returned to sender|mail system error|permanent error|\bbounced?\b|rejected|"
    r"not delivered|delivery error|failed delivery|delayed mail|warning: could not send|"
    # Localised non-delivery subjects (German, French, Italian, Spanish, Portuguese, Dutch,
    # Polish, Swedish, Danish, Norwegian).
    r"unzustellbar|nicht zustellbar|non remis|[ée]chec de (?:la )?remise|non recapitabile|"
    r"no se puede entregar|n[aã]o (?:[eé] poss[ií]vel entregar|entregue)|onbestelbaar|"
    r"niedostarczalne|olevererbar|kan ikke leveres|ikke levert",
    re.I,
)
_DELAY_SUBJECT = re.compile(r"\(delay\)|\bdelayed\b|still being retried|warning: could not send|"
                            r"delivery (?:status )?(?:notification )?\(?delay", re.I)
_DELAY_TEXT = re.compile(
    r"will (?:continue|keep) trying|not yet been delivered|is being retried|"
    r"will be retried|continue to attempt|no action is required on your part|"
    r"will try (?:again|to deliver)|has been delayed|delivery (?:is )?delayed|"
    r"still trying|retry (?:will be )?(?:for|until)|(?:will|shall) continue to try|"
    r"has been postponed|will be attempted again|will retry",
    re.I,
)
_BOUNCE_TEXT = re.compile(
    r"could not be delivered|couldn'?t be delivered|undeliverable|delivery (?:has )?failed|"
    r"failed to deliver|unable to deliver|permanent(?:ly)? (?:error|fail)|not be delivered|"
    r"was not delivered|delivery to the following|returned (?:mail|to sender)|error sending|"
    r"trouble delivering|invalid (?:user|recipient)|error message below|could not deliver|"
    r"did not reach|not reach the following|delivery failure|message (?:was )?rejected|"
    r"wasn'?t delivered|as their mailbox is full", re.I)
# Words that say the mail system has not given up, whatever it said about this attempt.
_STILL_TRYING = re.compile(
    r"(?:delivery )?attempts will continue|will continue to (?:try|attempt|be (?:made|attempted))|"
    r"will (?:keep|continue) trying|(?:you )?do not need to resend|will be retried for", re.I)
_GIVEN_UP = re.compile(r"permanent|fatal|giving up|gave up|will not be retried|no further", re.I)
_PERMANENT_TEXT = re.compile(r"permanent|fatal|giving up|gave up|failed|could not be delivered",
                             re.I)
_DAEMON = re.compile(r"mailer-daemon|post_?master|mail ?delivery|mail ?system|daemon|"
                     r"\bmta\b|bounce|"
                     # mailing list managers' own addresses
                     r"\bowner-|-owner@|-admin@|-request@|listserv|majordomo", re.I)
# Where MTAs start quoting the original message: what follows is not the error text.
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>]*-{2,}.*(?:copy of the (?:original )?message|original message|below this line|"
    r"message follows|undelivered message|message headers? follows?|headers? of the original|"
    r"original headers|returned message|message text follows|unsent message)"
    r"|^[ \t]*(?:Original message follows|Original message header|\*\*\* Original message|"
    r"The original message (?:was|is) (?:attached|included|enclosed|below|as follows)|"
    r"The original message headers|The header of the original|Below is a copy|"
    r"--- The header of the original|Return-Path: |Received: from |"
    r"(?:A )?summary of the (?:undelivered )?message (?:you sent )?follows|"
    r"Included is a copy of the message header|"
    r"Content-Type:\s*(?:message/rfc822|text/rfc822-headers?|message/rfc822-headers))",
    re.I | re.MULTILINE,
)
_FEEDBACK_TYPE = re.compile(r"^Feedback-Type:\s*([\w-]+)", re.MULTILINE | re.I)
_ARF_RECIPIENT = re.compile(r"^(?:Original-Rcpt-To|Removal-Recipient):\s*<?([^\s<>]+@[^\s<>]+)",
                            re.MULTILINE | re.I)
_COMPLAINT_HINT = re.compile(
    r"complaint|abuse report|\babuse\b|feedback[ -]?loop|\bfbl\b|spam report|reported as spam|"
    r"junk (?:mail )?report|marked as (?:spam|junk)|spam complaint", re.I)
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|answer)|auto:|autoreply|"
    r"out of (?:the )?office|away from|on vacation|vacation|abwesen|absence|absent|"
    r"r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica|away until|"
    r"i am (?:away|out)|i'm (?:away|out)|"
    # The same in other languages (German, Dutch, Portuguese, Polish, Nordic, Finnish, Russian,
    # Spanish, French, Japanese, Chinese).
    r"automatische antwort|automatisch antwoord|resposta autom[aá]tica|automatyczna odpowied|"
    r"autosvar|automatisk svar|automaattinen vastaus|автоответ|автоматический ответ|"
    r"fuera de la oficina|hors du bureau|absent du bureau|自動応答|自動返信|自动回复)", re.I)
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Not", "X-Vacation",
                 "X-Autoresponder", "X-Mail-Autoreply", "X-Autogenerated")
# A DSN field group as text, when the report is not parsed as MIME (missing boundary etc.).
_DSN_FIELD = re.compile(r"^(Final-Recipient|Original-Recipient|Action|Status|Diagnostic-Code|"
                        r"Remote-MTA|X-Actual-Recipient|X-PowerMTA-BounceCategory):[ \t]*(.*(?:\n[ \t]+.*)*)",
                        re.MULTILINE | re.I)
# A line that names a failed recipient in a plain-text bounce: the address first, alone or
# followed by ":", "...", "(" or words (Postfix, qmail, Exim, Sendmail, Gmail, Exchange...).
_RECIPIENT_LINE = re.compile(
    r"^[ \t]*(?:>>>[ \t]*|[*\-\u2022][ \t]+)?(?:[45]\d\d[ \t]+)?"
    r"(?:(?:Recipient(?:\(s\))?|Original[ -]Recipient|Failed[ -]Recipient"
    r"|Final[ -]Recipient|Address(?:es)?|Your message to|Unknown address|Invalid recipient"
    r"|E-?mail address|(?:could not|couldn't|cannot) be delivered to|delivery to"
    r"|failed to deliver to|unable to deliver (?:message )?to|undeliverable to"
    r"|The following recipients returned permanent errors)[ \t]*[:;]?[ \t]*(?:rfc822;)?[ \t]*)?"
    r"[<\"'(\[]?(?:mailto:)?([\w.!#$%&'*+/=?^`{|}~\-]+@[\w\-]+(?:\.[\w\-]+)+)[>\"')\]]?"
    r"(?![\w\-]|\.[\w\-])(?=[ \t]*$|[ \t]*[:.,;(<\[]|[ \t]+\S)",
    re.MULTILINE | re.I,
)


@dataclass(frozen=True)
class Report:
    """What one message tells about one of our messages: a verdict per recipient it names."""

    kind: Kind
    verdicts: tuple[Verdict, ...] = ()
    token: str | None = None  # our recipient token, from the VERP address or X-Sendboard-Rid
    original_message_id: str | None = None  # without angle brackets
    original_recipient: str | None = None  # To: of the returned message
    feedback_type: str | None = None
    report_message_id: str | None = None  # the report's own Message-ID

    @property
    def chosen(self) -> Verdict | None:
        """The verdict about our recipient: the one whose address is the returned message's
        To:, else the first failure, else the first verdict."""
        if not self.verdicts:
            return None
        wanted = (self.original_recipient or "").lower()
        if wanted:
            for verdict in self.verdicts:
                if (verdict.recipient or "").lower() == wanted:
                    return verdict
        for verdict in self.verdicts:
            if verdict.is_failure:
                return verdict
        return self.verdicts[0]

    @property
    def response(self) -> Response | None:
        if self.kind == "unsubscribe":
            return Response.UNSUBSCRIBED
        chosen = self.chosen
        if chosen is None or self.kind in ("delay", "other"):
            return None
        return chosen.response

    @property
    def final_recipient(self) -> str | None:
        chosen = self.chosen
        return chosen.recipient if chosen else None

    @property
    def action(self) -> str | None:
        chosen = self.chosen
        return chosen.action if chosen else None

    @property
    def status(self) -> str | None:
        chosen = self.chosen
        return chosen.status if chosen else None

    @property
    def diagnostic(self) -> str:
        chosen = self.chosen
        return chosen.diagnostic if chosen else ""


def verp_token(address: str, prefix: str = "bounce") -> str | None:
    """The token in a VERP address ``<prefix>+<token>@domain``, or None."""
    match = re.search(re.escape(prefix) + r"\+(" + _TOKEN_CHARS + ")@", address or "", re.I)
    return match.group(1) if match else None


# ---------------------------------------------------------------- MIME helpers


def _jis(text: str) -> str:
    """ISO-2022-JP text left undecoded (a part or field without its charset) made readable."""
    if "\x1b$" not in text:
        return text
    try:
        return text.encode("ascii").decode("iso-2022-jp", errors="replace")
    except UnicodeError:
        return text


def _text(part: Message) -> str:
    """A leaf part's text, decoded; never raises on bad encodings."""
    return _jis(_raw_text(part))


def _raw_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: fall back to the raw text
        payload = None
    if isinstance(payload, bytes):
        charset = str(part.get_content_charset() or "utf-8")
        # A declared charset the bytes do not follow (UTF-8 labelled ISO-2022-JP or ASCII is
        # common): the first charset that reads them cleanly, else the declared one with
        # replacement characters.
        for candidate in (charset, "utf-8"):
            try:
                return payload.decode(candidate)
            except (LookupError, ValueError):
                continue
        try:
            return payload.decode(charset, errors="replace")
        except (LookupError, ValueError):
            return payload.decode("utf-8", errors="replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _as_text(part: Message) -> str:
    """A part (leaf or container) flattened to text, for searching headers in it."""
    try:
        return part.as_string()
    except Exception:  # compat32 may fail on odd charsets or headers
        return _text(part)


def _ctype(part: Message) -> str:
    try:
        return str(part.get_content_type()).lower()
    except Exception:
        return "text/plain"


def _header(message: Message, name: str) -> str:
    """A header's text: RFC 2047 encoded words decoded, raw UTF-8 bytes read as UTF-8."""
    try:
        value = message.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    try:
        if isinstance(value, Header):  # raw 8-bit bytes in the header: most often UTF-8
            text = "".join(part.decode(str(charset) if charset and charset != "unknown-8bit"
                                       else "utf-8", "replace") if isinstance(part, bytes)
                           else part for part, charset in decode_header(value))
        else:
            text = str(value)
            if "=?" in text:
                text = str(make_header(decode_header(text)))
    except Exception:  # a malformed encoded word or charset: the raw text
        text = str(value)
    return " ".join(text.split())


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


def _walk(message: Message, depth: int = 0, *, returned: bool = True) -> Iterable[Message]:
    """The message and its parts; with `returned` False, not the parts of attached messages."""
    yield message
    if depth > 20 or not returned and depth and _ctype(message) == "message/rfc822":
        return
    payload = message.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _walk(sub, depth + 1, returned=returned)


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


def _returned(message: Message, text_after_marker: str) -> list[str]:
    """The returned message or headers, as text: where the original Message-ID and To are."""
    sources: list[str] = []
    for part in _walk(message):
        ctype = _ctype(part)
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                     "text/rfc822-header", "message/partial"):
            sources.append(_as_text(part) if ctype.startswith("message/") else _text(part))
    sources.append(text_after_marker)
    return sources


def _original(sources: list[str]) -> tuple[str | None, str | None, str | None]:
    """The original Message-ID, X-Sendboard-Rid token and To address."""
    message_id = token = to = None
    for source in sources:
        if message_id is None:
            found = _MESSAGE_ID.search(source)
            message_id = found.group(1) if found else None
        if token is None:
            rid = _RID_HEADER.search(source)
            token = rid.group(1) if rid else None
        if to is None:
            header = _ORIGINAL_TO.search(source)
            address = _ADDRESS.search(header.group(1)) if header else None
            to = address.group(0) if address else None
    return message_id, token, to


def _body_text(message: Message) -> str:
    """The human-readable text of the report: text leaves outside any returned message, and the
    raw text of a multipart whose parts could not be split (a missing or wrong boundary)."""
    texts: list[str] = []

    def visit(part: Message, depth: int) -> None:
        ctype = _ctype(part)
        if depth and (ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                                "text/rfc822-header", "message/delivery-status",
                                "message/feedback-report", "message/global-delivery-status")):
            return
        payload = part.get_payload()
        if isinstance(payload, list):
            if depth > 20:
                return
            for sub in payload:
                if isinstance(sub, Message):
                    visit(sub, depth + 1)
            return
        if ctype == "text/html":
            texts.append(re.sub(r"<[^>]+>", " ", _text(part)).replace("&nbsp;", " "))
        elif ctype.startswith(("text/", "multipart/", "message/")) or ctype == "":
            texts.append(_text(part))
        elif part.get_content_maintype() == "application" and "json" in ctype:
            texts.append(_text(part))

    visit(message, 0)
    return "\n".join(texts)


def _split_original(text: str) -> tuple[str, str]:
    match = _ORIGINAL_MARKER.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start():]


# ---------------------------------------------------------------- DSN (RFC 3464)


def _groups_from_text(text: str) -> list[dict[str, str]]:
    """DSN per-recipient fields written as text (a report whose MIME structure is broken)."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for match in _DSN_FIELD.finditer(text):
        name = match.group(1).lower()
        value = " ".join(match.group(2).split())
        # A new recipient's group starts with a field this one already has.
        if current and name in current:
            groups.append(current)
            current = {}
        if name not in current:
            current[name] = value
    if current:
        groups.append(current)
    return [g for g in groups if "final-recipient" in g or "original-recipient" in g]


def _delivery_groups(message: Message) -> list[dict[str, str]]:
    """The per-recipient field groups of the message/delivery-status part (RFC 3464 §2.3): the
    report's own, else those of an attached report (a bounce forwarded as an attachment)."""
    return _groups_in(message, returned=False) or _groups_in(message, returned=True)


def _groups_in(message: Message, *, returned: bool) -> list[dict[str, str]]:
    groups: list[dict[str, str]] = []
    for part in _walk(message, returned=returned):
        if _ctype(part) not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            # Each field group was parsed as a header block: its fields are its headers.
            text = "\n\n".join(
                "\n".join(f"{name}: {value}" for name, value in g.items())
                for g in payload if isinstance(g, Message))
        else:
            text = _text(part)
        groups.extend(_groups_from_text(_jis(text)))
    return groups


# Per-recipient categories some MTAs add to their DSNs (PowerMTA's X-PowerMTA-BounceCategory).
_CATEGORIES = {
    "bad-mailbox": Reason.USER_UNKNOWN, "bad-domain": Reason.HOST_UNKNOWN,
    "inactive-mailbox": Reason.SUSPENDED, "quota-issues": Reason.MAILBOX_FULL,
    "spam-related": Reason.FILTERED, "content-related": Reason.FILTERED,
    "virus-related": Reason.FILTERED, "policy-related": Reason.POLICY,
    "invalid-sender": Reason.SENDER, "relaying-issues": Reason.POLICY,
    "message-expired": Reason.EXPIRED, "no-answer-from-host": Reason.NETWORK_ERROR,
    "bad-connection": Reason.NETWORK_ERROR, "routing-errors": Reason.NETWORK_ERROR,
    "protocol-errors": Reason.SYSTEM_ERROR, "bad-configuration": Reason.SYSTEM_ERROR,
}
_RCPT_TRANSCRIPT = r">>>\s*RCPT\s+TO:\s*<?{}>?[^\n]*\n\s*<<<\s*[45]\d\d"


def _rcpt_refused(address: str | None, text: str) -> str | None:
    """ "RCPT" when a session transcript shows this recipient's RCPT TO refused."""
    if not address:
        return None
    pattern = _RCPT_TRANSCRIPT.format(re.escape(address))
    return "RCPT" if re.search(pattern, text, re.IGNORECASE) else None


def _recipient_of(group: dict[str, str]) -> str | None:
    for name in ("final-recipient", "x-actual-recipient", "original-recipient"):
        value = _strip_type(group.get(name))
        if value:
            found = _ADDRESS.search(value)
            if found:
                return found.group(0).strip(".")
    return None


# ---------------------------------------------------------------- plain text


_SENDER_BEFORE = re.compile(r"(?:sent by|from|sender(?: address)?)\s*:?\s*$", re.I)


def _blocks(human: str, exclude: set[str]) -> list[tuple[str, str]]:
    """(address, the text about it) for each recipient a plain-text bounce names, in order."""
    lines = list(_RECIPIENT_LINE.finditer(human))
    found: list[tuple[str, int, int]] = []
    for match in lines:
        address = match.group(1).strip(".").lower()
        local = address.split("@")[0]
        if address in exclude or local in ("mailer-daemon", "postmaster") or "+" in local \
                and local.split("+")[0] in ("bounce", "bounces"):
            continue
        if _SENDER_BEFORE.search(human[max(0, match.start() - 60):match.start()]):
            continue  # "A message sent by <address>": the sender, not a recipient
        found.append((address, match.start(), match.end()))
    out: dict[str, list[str]] = {}
    # Each block runs to the next line naming another recipient (found from the end, in one pass).
    ends = [len(human)] * len(found)
    for i in range(len(found) - 2, -1, -1):
        ends[i] = found[i + 1][1] if found[i + 1][0] != found[i][0] else ends[i + 1]
    for i, (address, start, _) in enumerate(found):
        block = human[start:ends[i]]
        first, _, rest = block.partition("\n")
        if _failure_named(first.replace(address, " ")):
            # The line names the failure itself ("<a@b>: host x said: 550 ...", "554 <a@b>...
            # Host unknown"): keep it and its indented continuation, not the next recipient's
            # lines that some MTAs write before that recipient's own line.
            kept = [first]
            for line in rest.split("\n"):
                if not line[:1].isspace() or not line.strip():
                    break
                kept.append(line)
            block = "\n".join(kept)
        out.setdefault(address, []).append(block)
    return [(address, "\n".join(parts)) for address, parts in out.items()]


_NAMED_FAILURES = frozenset({
    Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN, Reason.MAILBOX_FULL, Reason.BLOCKED, Reason.SENDER,
    Reason.EXPIRED, Reason.NOT_ACCEPTING, Reason.HAS_MOVED, Reason.SUSPENDED, Reason.TOO_LARGE,
})


def _failure_named(text: str) -> bool:
    """A delivery failure stated plainly: a status or reply code, or words naming one."""
    return bool(enhanced_code(text) or reply_code(text) or words_reason(text) in _NAMED_FAILURES)


def _evidence(text: str) -> bool:
    return bool(enhanced_code(text) or reply_code(text) or words_reason(text))


_BOILERPLATE = re.compile(
    r"^.*(?:this is the mail system at|this message was created automatically|"
    r"i'm sorry to have to inform you|i'm afraid i wasn't able|please do not reply|"
    r"for further assistance|for assistance|if you do so|you can delete your own text|"
    r"this is an automatically generated|hi\. this is the qmail|the mail system\s*$|"
    r"contact your system administrator|content-(?:type|transfer-encoding|description)|"
    r"mime-version|reporting-mta|received-from-mta|arrival-date|x-postfix|this is a mime).*$",
    re.I | re.MULTILINE)


def _summary(text: str) -> str:
    """The error lines of a bounce's text, without the polite boilerplate around them."""
    text = _BOILERPLATE.sub(" ", text)
    return " ".join(text.split())[:2000]


# ---------------------------------------------------------------- provider notifications


def _json_objects(text: str) -> list[dict[str, Any]]:
    start = text.find("{")
    if start < 0:
        return []
    try:
        data = json.loads(text[start:text.rfind("}") + 1])
    except ValueError:
        return []
    if isinstance(data, dict) and isinstance(data.get("Message"), str):
        try:
            inner = json.loads(data["Message"])
        except ValueError:
            inner = None
        data = inner if isinstance(inner, dict) else data
    return [data] if isinstance(data, dict) else []


def _json_arrays(text: str) -> list[dict[str, Any]]:
    """The notification's type and recipient arrays, read one by one when the whole JSON does
    not parse (a notification wrapped or cut by the mail system)."""
    kind = re.search(r'"(?:notificationType|eventType)"\s*:\s*"(\w+)"', text)
    if kind is None:
        return []
    data: dict[str, Any] = {"notificationType": kind.group(1)}
    for section, key in (("bounce", "bouncedRecipients"), ("complaint", "complainedRecipients"),
                         ("delivery", "recipients")):
        found = re.search(r'"' + key + r'"\s*:\s*(\[[^\]]*\])', text)
        if found:
            try:
                data[section] = {key: json.loads(found.group(1))}
            except ValueError:
                continue
    return [data]


def _notification(text: str) -> tuple[Kind, list[Verdict]] | None:
    """An e-mailed provider notification (JSON with notificationType/eventType, as SNS sends)."""
    unwrapped = re.sub(r"\r?\n[ \t]", "", text)  # a notification folded by the mail system
    found = _json_objects(text) or _json_objects(unwrapped) or _json_arrays(unwrapped) \
        or _json_arrays(unwrapped.replace('\\"', '"'))
    for data in found:
        kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
        if kind == "bounce":
            section = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
            people = section.get("bouncedRecipients") if isinstance(section, dict) else None
            verdicts = []
            for person in people if isinstance(people, list) else []:
                if not isinstance(person, dict):
                    continue
                verdicts.append(classify(
                    str(person.get("status") or ""), str(person.get("diagnosticCode") or ""),
                    action=str(person.get("action") or "failed"),
                    recipient=str(person.get("emailAddress") or "") or None))
            if not verdicts:
                verdicts.append(classify(None, "", action="failed"))
            return "bounce", verdicts
        if kind == "complaint":
            section = data.get("complaint") if isinstance(data.get("complaint"), dict) else {}
            people = section.get("complainedRecipients") if isinstance(section, dict) else None
            feedback = str(section.get("complaintFeedbackType") or "abuse") \
                if isinstance(section, dict) else "abuse"
            addresses = [str(p.get("emailAddress")) for p in people or []
                         if isinstance(p, dict) and p.get("emailAddress")] \
                if isinstance(people, list) else []
            return "complaint", [Verdict(Reason.COMPLAINT, recipient=a, feedback_type=feedback)
                                 for a in addresses or [""]]
        if kind == "delivery":
            section = data.get("delivery") if isinstance(data.get("delivery"), dict) else {}
            people = section.get("recipients") if isinstance(section, dict) else None
            addresses = [str(a) for a in people] if isinstance(people, list) else []
            return "delivered", [Verdict(Reason.DELIVERED, recipient=a or None,
                                         action="delivered") for a in addresses or [""]]
    return None


# ---------------------------------------------------------------- the report


def parse(raw: bytes, envelope_recipients: Sequence[str] = (), *,
          verp_prefix: str = "bounce") -> Report:
    """Read one bounce, complaint, delay notice, delivery report or auto-reply; kind "other"
    when it is none of those. Never raises: unreadable input is "other"."""
    try:
        return _parse(bytes(raw), envelope_recipients, verp_prefix)
    except Exception:  # malformed mail of any kind must not stop the mailbox reader
        return Report(kind="other")


# A report's text is read up to here: error texts are short, and a huge body must stay cheap.
_TEXT_LIMIT = 100_000
_CHALLENGE = re.compile(
    r"\b(?:has been|was|is) waitlisted|sender (?:is )?not pre-?approved|"
    r"(?:add|added) (?:yourself|your (?:e-?mail )?address) to (?:my|the recipient'?s?) "
    r"[\w ]{0,20}(?:guest|allowed|approved|safe|white) ?list|"
    r"to have your (?:e-?mail )?address added to|click (?:here|the link below) to deliver your "
    r"message|challenge[- ]response (?:system|message|filter)|"
    r"you(?:'re| are) (?:listed )?on my [\w ]{0,20}(?:guest|allowed|approved|safe|white) ?list",
    re.I)
_LINE_END = re.compile(rb"\r\n?")
_LEADING_BLANK = re.compile(rb"\A(?:[ \t]*\r?\n)+")
_FORWARDED = re.compile(r"^[ \t]*(?:-+ ?)?(?:begin forwarded message|forwarded message)",
                        re.I | re.M)


def _forwarded_report(body: str) -> str | None:
    """A bounce someone forwarded quoted ("> ..."), unquoted; None for anything else."""
    found = _FORWARDED.search(body)
    if found is None:
        return None
    rest = body[found.end():]
    lines = [line for line in rest.splitlines() if line.strip()]
    quoted = [line for line in lines if line.startswith(">")]
    if len(lines) < 3 or len(quoted) * 2 < len(lines):
        return None
    text = re.sub(r"^> ?", "", rest, flags=re.M)
    if not (_DAEMON.search(text[:2000]) or _BOUNCE_SUBJECT.search(text[:2000])):
        return None
    return text


def _is_auto_reply(message: Message, subject: str) -> bool:
    auto = _header(message, "Auto-Submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    if any(_header(message, name) for name in _AUTO_HEADERS):
        return True
    precedence = _header(message, "Precedence").lower()
    if precedence in ("auto_reply", "auto-reply"):
        return True
    return bool(_AUTO_SUBJECT.search(subject))


def _parse(raw: bytes, envelope: Sequence[str], prefix: str) -> Report:
    # One line ending (CRLF from the wire, a lone CR from old Mac tools) for the text patterns;
    # blank lines before the headers (mail saved by some tools) would make them the body.
    raw = _LINE_END.sub(b"\n", raw)
    message = message_from_bytes(_LEADING_BLANK.sub(b"", raw[:4096]) + raw[4096:], policy=compat32)
    token = _find_token(message, envelope, prefix)
    address_token = token  # the token in the address written to, not one quoted in a body
    own_id = _strip_brackets(message.get("Message-ID"))
    ctype = _ctype(message)
    report_type = str(message.get_param("report-type", "") or "").lower()
    subject = _header(message, "Subject")
    sender = _header(message, "From")
    body = _body_text(message)[:_TEXT_LIMIT]
    forwarded = _forwarded_report(body)
    if forwarded is not None:
        body = forwarded
    human, after = _split_original(body)
    sources = _returned(message, after)
    original_id, rid, original_to = _original(sources)
    token = token or rid
    base: dict[str, Any] = {"token": token, "original_message_id": original_id,
            "original_recipient": original_to, "report_message_id": own_id}
    parts = list(_walk(message))
    types = {_ctype(p) for p in parts}

    # Spam complaints: RFC 5965 feedback reports.
    if "message/feedback-report" in types or report_type == "feedback-report":
        feedback = None
        recipients: list[str] = []
        for part in parts:
            if _ctype(part) == "message/feedback-report":
                text = _as_text(part)
                found = _FEEDBACK_TYPE.search(text)
                feedback = found.group(1).lower() if found else feedback
                recipients += [m.group(1) for m in _ARF_RECIPIENT.finditer(text)]
        if feedback == "not-spam":  # the opposite of a complaint
            return Report(kind="other", **base)
        feedback = feedback or "abuse"
        complained = tuple(Verdict(Reason.COMPLAINT, recipient=r, feedback_type=feedback)
                           for r in dict.fromkeys(recipients)) or (
            Verdict(Reason.COMPLAINT, recipient=original_to, feedback_type=feedback),)
        return Report(kind="complaint", verdicts=complained, feedback_type=feedback, **base)

    # A challenge-response system holding the message until the sender proves to be a person:
    # nothing failed yet, and nothing is said about the address.
    if _CHALLENGE.search(human[:20_000]) and not _permanent_code(human, message):
        return Report(kind="other", **base)

    # RFC 3464 delivery status notifications.
    groups = _delivery_groups(message) or (
        _groups_from_text(body) if report_type == "delivery-status" or forwarded is not None
        or "multipart/" in ctype and not isinstance(message.get_payload(), list) else [])
    sender_addresses = {a.lower() for a in _ADDRESS.findall(sender + " " + _header(message, "To"))}
    blocks = dict(_blocks(human, sender_addresses))
    if groups:
        verdicts: list[Verdict] = []
        for group in groups:
            recipient = _recipient_of(group)
            diagnostic = _strip_type(group.get("diagnostic-code")) or ""
            status = group.get("status")
            extra = blocks.get((recipient or "").lower(), "")
            if not _evidence(diagnostic) and (extra or len(groups) == 1):
                diagnostic = (diagnostic + " " + _summary(extra or human)).strip()
            stage = smtp_stage(diagnostic) or _rcpt_refused(recipient, human) \
                or smtp_stage(extra) or (smtp_stage(human) if len(groups) == 1 else None)
            category = group.get("x-powermta-bouncecategory", "").strip().lower()
            verdicts.append(classify(status, diagnostic, action=group.get("action"),
                                     recipient=recipient, stage=stage,
                                     reported=_CATEGORIES.get(category)))
        return _report(verdicts, **base)

    # Provider notifications mailed as JSON (Amazon SES through SNS).
    notification = _notification(body) if "{" in body else None
    if notification is not None:
        kind, found_verdicts = notification
        return Report(kind=kind, verdicts=tuple(found_verdicts),
                      feedback_type=found_verdicts[0].feedback_type if found_verdicts else None,
                      **base)

    if _UNSUBSCRIBE_SUBJECT.match(subject):
        # A person (or their mail app's unsubscribe button) using the mailto: List-Unsubscribe
        # of a message: only the token of the address written to says whose.
        return Report(kind="unsubscribe", token=address_token, report_message_id=own_id)

    # Complaints without a feedback report: a provider forwarding the message complained about
    # (Hotmail/Outlook JMRP) or a person forwarding it to an abuse address.
    has_original = any(_ctype(p) == "message/rfc822" for p in parts[1:])
    # An empty From (<>) is a mail system's too: people have an address.
    daemon = bool(_DAEMON.search(sender)) or sender.replace(" ", "") in ("<>", '""<>')
    bounce_subject = bool(_BOUNCE_SUBJECT.search(subject))
    if not bounce_subject and (has_original and (
        _COMPLAINT_HINT.search(subject) or _COMPLAINT_HINT.search(sender)
        or any(p.get("X-HmXmrOriginalRecipient") for p in parts)
    ) or message.get("X-HmXmrOriginalRecipient")):
        # X-HmXmrOriginalRecipient is added only to the copies Outlook.com returns to the
        # sender of a message its user reported, attached or (some relays) as the message.
        recipient = None
        for part in parts:
            value = part.get("X-HmXmrOriginalRecipient")
            if value:
                found = _ADDRESS.search(str(value))
                recipient = found.group(0) if found else None
                break
        if not has_original:
            # The report is the reported message itself: its own headers are the original's.
            own = _as_text(message)
            own_original = _original([own.split("\n\n", 1)[0]])
            base["original_message_id"] = own_original[0]
            base["original_recipient"] = own_original[2]
            base["token"] = base["token"] or own_original[1] or verp_token(
                _header(message, "Return-Path"), prefix)
        return Report(kind="complaint", verdicts=(
            Verdict(Reason.COMPLAINT, recipient=recipient or original_to,
                    feedback_type="abuse"),), feedback_type="abuse", **base)

    failed_header = _header(message, "X-Failed-Recipients")
    # A bounce names failed recipients or comes from a mail system with an error to tell; a
    # bounce-like subject alone (a person's "Re: rejected") is not enough.
    looks_bounce = bool(failed_header or bounce_subject and (daemon or _failure_named(human))
                        or report_type == "delivery-status" and _failure_named(human)
                        or blocks and (daemon or bounce_subject and _BOUNCE_TEXT.search(human))
                        or (daemon or _BOUNCE_TEXT.search(human)) and _failure_named(human))

    # Automatic replies (RFC 3834): timeline entries, not bounces.
    if not looks_bounce and _is_auto_reply(message, subject) or (
            not failed_header and words_reason(subject) is Reason.AUTO_REPLY):
        return Report(kind="auto_reply", verdicts=(
            Verdict(Reason.AUTO_REPLY, recipient=_first_address(sender),
                    diagnostic=subject[:200]),), **base)
    if not looks_bounce:
        return Report(kind="other", **base)

    # Plain-text bounces: one verdict per recipient named in the text.
    still_trying = _STILL_TRYING.search(human)
    delayed = bool(_DELAY_SUBJECT.search(subject) or _DELAY_TEXT.search(human)
                   and not _PERMANENT_TEXT.search(_DELAY_TEXT.split(human)[0])
                   # "could not be delivered ... attempts will continue": not given up yet
                   or still_trying and not _GIVEN_UP.search(human[:still_trying.start()]))
    action = "delayed" if delayed else "failed"
    if not blocks:
        for address in _ADDRESS.findall(failed_header):
            blocks.setdefault(address.lower(), "")
    verdicts = []
    for address, text in blocks.items():
        if not _evidence(text):
            text = (text + " " + _summary(human)).strip()
        verdicts.append(classify(None, _summary(text), action=action, recipient=address,
                                 stage=smtp_stage(text) or _rcpt_refused(address, human)))
    if not verdicts:
        verdicts.append(classify(None, _summary(human) or subject, action=action))
    return _report(verdicts, **base)


def _permanent_code(human: str, message: Message) -> bool:
    """A permanent status or reply code in the text or the report's fields: something failed."""
    texts = [human] + [" ".join(g.values()) for g in _delivery_groups(message)]
    return any((enhanced_code(t) or reply_code(t) or "")[:1] == "5" for t in texts)


def _report(verdicts: list[Verdict], **base: Any) -> Report:
    """The report's kind from its verdicts: a bounce if any recipient failed."""
    found = tuple(verdicts)
    if any(v.is_failure for v in found):
        kind: Kind = "bounce"
    elif any(v.delayed for v in found):
        kind = "delay"
    elif any(v.reason is Reason.AUTO_REPLY for v in found):
        kind = "auto_reply"
    elif found and all(v.reason is Reason.DELIVERED for v in found):
        kind = "delivered"
    else:
        kind = "other"
    return Report(kind=kind, verdicts=found, **base)


def _first_address(value: str) -> str | None:
    found = _ADDRESS.search(value or "")
    return found.group(0) if found else None


def _strip_brackets(value: object) -> str | None:
    if value is None:
        return None
    cleaned = str(value).strip().strip("<>").strip()
    return cleaned or None


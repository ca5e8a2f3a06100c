"""Classifying a delivery failure from its SMTP reply or enhanced status code (RFC 3463).

| status / text | response |
|---|---|
| 4.x.x, or a 4xx reply, or retries exhausted ("retry timeout exceeded") | Soft bounce |
| 5.2.2 mailbox full, "over quota", "try again later" | Soft bounce |
| 5.7.x about the sender ("blocked", "blacklisted", "spamhaus", "reputation", "denied") | Blocked |
| 5.7.x about content ("spam", "content") | Soft bounce (a spam filter; the address is fine) |
| 5.1.x (unknown user or host, moved), and any other 5.x.x | Hard bounce |
| "policy" | Soft bounce |
"""

from __future__ import annotations

import re

from app.domain.responses import Response

# Not part of a longer dotted number: "[64.4.22.10]" is an IP address, not status 4.22.10.
_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# A reply code at the start, or after "said", ":" or ";" (Postfix "said: 550 ...", Exim
# "SMTP error from remote mail server after RCPT TO:<...>: 550 ...", DSN "smtp; 550 ...").
_REPLY = re.compile(r"(?:^|[:;]|\bsaid)\s*([245])\d\d(?=[\s-]|$)")
_SENDER_BLOCK = re.compile(
    r"block|blacklist|blocklist|denylist|spamhaus|spamcop|barracuda|reputation|"
    r"not authori[sz]ed to send|rejected due to|banned|listed (?:at|on|in)|access denied|"
    r"denied|\brbl\b|dnsbl",
    re.IGNORECASE,
)
_SOFT_TEXT = re.compile(
    r"mailbox (?:is )?full|over ?quota|quota exceeded|insufficient (?:system )?storage|"
    r"try again later|temporar|too many (?:messages|connections)|rate limit|greylist|retry time",
    re.IGNORECASE,
)
_CONTENT = re.compile(r"spam|content|message (?:was )?rejected|virus|suspicious", re.IGNORECASE)
_POLICY = re.compile(r"\bpolicy\b", re.IGNORECASE)


def enhanced_code(text: str) -> str | None:
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def classify_status(status: str | None, diagnostic: str = "") -> Response:
    """Hard bounce, soft bounce or blocked, from a status code and the server's words."""
    code = enhanced_code(status or "") or enhanced_code(diagnostic)
    text = diagnostic or ""
    if code is None:
        reply = _REPLY.search(status or "") or _REPLY.search(text)
        klass = reply.group(1) if reply else None
        if klass == "4":
            return Response.SOFT_BOUNCE
        if klass == "5":
            if _SENDER_BLOCK.search(text):
                return Response.BLOCKED
            if _SOFT_TEXT.search(text):
                return Response.SOFT_BOUNCE
            return Response.HARD_BOUNCE
        return Response.SOFT_BOUNCE if _SOFT_TEXT.search(text) else Response.HARD_BOUNCE
    klass, subject, detail = code.split(".")
    if klass in {"4", "2"}:
        return Response.SOFT_BOUNCE
    if subject == "2" and detail == "2":
        return Response.SOFT_BOUNCE
    if _SOFT_TEXT.search(text):
        return Response.SOFT_BOUNCE
    if subject == "7":
        if _SENDER_BLOCK.search(text):
            return Response.BLOCKED
        if _CONTENT.search(text) or _POLICY.search(text):
            return Response.SOFT_BOUNCE
        return Response.BLOCKED
    if subject == "1":
        return Response.HARD_BOUNCE
    if _SENDER_BLOCK.search(text) and subject in {"0", "3", "5"}:
        return Response.BLOCKED
    return Response.HARD_BOUNCE

"""DKIM rules as plain Python: which names are valid, which key sizes, and the DNS record to publish.

A sending domain's messages are signed with its private key; receivers check the signature
against the public key published as a TXT record at `<selector>._domainkey.<domain>`.
"""

from __future__ import annotations

import re
from datetime import date

GENERATED_KEY_BITS = 2048
MIN_KEY_BITS = 1024  # RFC 8301: verifiers refuse smaller RSA keys
MAX_KEY_BITS = 4096
# The header fields the signature covers (RFC 6376 5.4). A field named here but absent from a
# message is signed as absent, so it cannot be added on the way without breaking the signature.
SIGNED_HEADERS: tuple[str, ...] = (
    "From", "To", "Subject", "Date", "Message-ID", "Reply-To", "List-Unsubscribe",
    "List-Unsubscribe-Post", "MIME-Version", "Content-Type",
)
CANONICALIZATION = ("relaxed", "relaxed")
TXT_STRING_MAX = 255  # one character-string of a TXT record (RFC 1035 3.3)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TOP_LABEL = re.compile(r"(?=.*[a-z])[a-z0-9-]{2,63}")  # a top-level domain is not all digits
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class DkimNameError(ValueError):
    """A domain or selector that cannot be used; str() says why."""


def normalize_domain(raw: str) -> str:
    """A sending domain in the form DNS and the d= tag use: lower case, ASCII (an international
    domain in its xn-- form), no trailing dot. Raises DkimNameError."""
    text = (raw or "").strip().rstrip(".").lower()
    if "@" in text:
        text = text.rpartition("@")[2]
    if not text:
        raise DkimNameError("Enter the domain of the From addresses to sign, such as example.org.")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DkimNameError(f"{raw.strip()!r} is not a valid domain name.") from exc
    labels = text.split(".")
    if (len(labels) < 2 or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels)
            or not _TOP_LABEL.fullmatch(labels[-1])):
        raise DkimNameError(f"{raw.strip()!r} is not a valid domain name (such as example.org).")
    return text


def normalize_selector(raw: str, domain: str) -> str:
    """A selector: one or more DNS labels (letters, digits, hyphens), lower case.
    The full record name must fit in a DNS name. Raises DkimNameError."""
    text = (raw or "").strip().rstrip(".").lower()
    if not text:
        raise DkimNameError("Enter a selector, such as sb2026.")
    if not all(_LABEL.fullmatch(label) for label in text.split(".")):
        raise DkimNameError(
            f"{raw.strip()!r} is not a valid selector: use letters, digits and hyphens "
            "(dots between parts), such as sb2026."
        )
    if len(record_name(text, domain)) > 253:
        raise DkimNameError("The selector is too long for this domain (DNS names end at 253 characters).")
    return text


def default_selector(today: date) -> str:
    """A selector that names the month the key was made, so a later key gets a new name."""
    return f"sb{today:%Y%m}"


def record_name(selector: str, domain: str) -> str:
    """Where the public key is published."""
    return f"{selector}._domainkey.{domain}"


def record_value(public_key_b64: str) -> str:
    """The TXT record's text: the tag list receivers read (RFC 6376 3.6.1)."""
    key = "".join(public_key_b64.split())
    if not _BASE64.fullmatch(key):
        raise ValueError("the public key must be base64 text")
    return f"v=DKIM1; k=rsa; p={key}"


def record_strings(value: str) -> list[str]:
    """The record split into character-strings of at most 255 characters, as a zone file
    writes a long TXT record; receivers join them back without spaces."""
    return [value[i:i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)] or [""]


def zone_line(selector: str, domain: str, value: str) -> str:
    """The record as one line of a BIND zone file."""
    strings = " ".join(f'"{part}"' for part in record_strings(value))
    return f"{record_name(selector, domain)}. IN TXT ( {strings} )"


def candidate_domains(domain: str) -> list[str]:
    """The domains whose key may sign mail from `domain`, nearest first: the domain itself, then
    its parents down to two labels (a parent's signature still aligns for DMARC in relaxed mode)."""
    labels = domain.strip().rstrip(".").lower().split(".")
    return [".".join(labels[i:]) for i in range(0, max(len(labels) - 1, 0))]


def check_key_bits(bits: int) -> None:
    """Refuse an RSA key size receivers would not accept or that makes an unwieldy record."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(
            f"The key has {bits} bits; DKIM needs an RSA key of {MIN_KEY_BITS} to {MAX_KEY_BITS} bits "
            f"({GENERATED_KEY_BITS} is usual)."
        )

"""Body parts go as 7bit when they already are 7bit data, else quoted-printable; versions frozen
before that rule keep quoted-printable, so their messages rebuild byte for byte."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.rendering import MAX_LINE, SEVEN_BIT, TOKEN_SLOT, MessageBuilder

BASE = {"subject": "Hi {{ name }}", "base_url": "http://localhost",
        "bounce_domain": "bounce.example", "boundary": "=_sb_test", "domain": "example.org",
        "reply_to": "", "from": "news@shop.example"}


def build(html: str, text: str, name: str = "Ada", *, frozen_with_rule: bool = True) -> bytes:
    content = {**BASE, "html": html, "text": text}
    if frozen_with_rule:
        content["body_encoding"] = SEVEN_BIT
    return MessageBuilder(content).build(
        merge={"name": name, "email": "ada@example.org"}, address="ada@example.org", token="t",
        message_id="m@example.org", sent_at=datetime(2026, 11, 23, tzinfo=UTC)).data


def parts(data: bytes) -> dict[str, tuple[str, str]]:
    """content type -> (transfer encoding, decoded text), as a mail client reads them."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    found = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            found[part.get_content_type()] = (part["Content-Transfer-Encoding"],
                                              part.get_content())
    return found


def test_ascii_parts_go_as_they_are():
    data = build("<p>Hello {{ name }} &amp; a=b</p>", "Hello {{ name }}\n.\nBye")
    got = parts(data)
    assert got["text/plain"] == ("7bit", "Hello Ada\r\n.\r\nBye")
    assert got["text/html"][0] == "7bit" and "Hello Ada &amp; a=b" in got["text/html"][1]
    assert b"Hello Ada\r\n.\r\nBye" in data  # CRLF on the wire; smtplib-style dot stuffing comes later


@pytest.mark.parametrize(("html", "text", "name"), [
    ("<p>Hi {{ name }}</p>", "Hi {{ name }}", "Zoë"),  # a non-ASCII merge value
    ("<p>" + "x" * (MAX_LINE + 1) + "</p>", "short", "Ada"),  # a line too long for 7bit
    ("<p>a\x00b</p>", "nul", "Ada"),  # NUL is not 7bit data
])
def test_other_parts_are_quoted_printable(html, text, name):
    data = build(html, text, name)
    got = parts(data)
    assert got["text/html"][0] == "quoted-printable"
    assert got["text/html"][1].replace("\r\n", "\n") == html.replace("{{ name }}", name)


def test_a_version_frozen_before_the_rule_keeps_quoted_printable():
    data = build("<p>Hello {{ name }}</p>", "Hello {{ name }}", frozen_with_rule=False)
    assert {cte for cte, _ in parts(data).values()} == {"quoted-printable"}


@settings(max_examples=150, deadline=None)
# The token's placeholder is swapped for the token wherever it appears after rendering, so a
# value that holds the placeholder itself does not read back as it was.
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=3000).filter(
    lambda t: TOKEN_SLOT not in t))
def test_any_text_reads_back_the_same_whichever_encoding(text):
    data = build("", "{{ name }}", name=text)
    cte, decoded = parts(data)["text/plain"]
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    assert decoded.replace("\r\n", "\n") == normalized
    assert cte == ("7bit" if normalized.isascii() and "\x00" not in normalized and all(
        len(line) <= MAX_LINE for line in normalized.split("\n")) else "quoted-printable")
    assert all(len(line) <= MAX_LINE for line in data.split(b"\r\n"))

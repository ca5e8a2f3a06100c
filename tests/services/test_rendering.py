"""Message building: what cannot be written as an email header is a problem for that message,
never a crash of the batch; addresses are written in their ASCII form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.domain.eligibility import ascii_address
from app.services.rendering import MessageBuilder, TemplateProblem

CONTENT = {"subject": "Hi {{ name }}", "html": "", "text": "Hello {{ name }}",
           "base_url": "http://localhost", "bounce_domain": "bounce.example",
           "boundary": "b", "domain": "example.org", "reply_to": ""}


def build(**content):
    builder = MessageBuilder({**CONTENT, **content})
    return builder.build(merge={"name": "Zoë\nX-Evil: 1", "email": "a@b.example"},
                         address="zoe@bücher.de", token="t", message_id="m@example.org",
                         sent_at=datetime(2026, 11, 23, tzinfo=UTC))


def test_names_and_domains_become_safe_ascii_headers():
    data = build(**{"from": "Shop <news@shop.example>"}).data
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "\nX-Evil" not in head
    assert "<zoe@xn--bcher-kva.de>" in head and "To: =?utf-8?" in head


def test_a_header_that_cannot_be_7_bit_is_a_template_problem():
    with pytest.raises(TemplateProblem, match="7-bit"):
        build(**{"from": "jörg@shop.example"})


@pytest.mark.parametrize(("given", "expected"), [
    ("anna@bücher.de", "anna@xn--bcher-kva.de"),
    (" plain@example.org ", "plain@example.org"),
    ("no-at-sign", "no-at-sign"),
    ("x@" + "ü" * 70 + ".de", "x@" + "ü" * 70 + ".de"),  # label too long: left for the check
])
def test_ascii_address(given, expected):
    assert ascii_address(given) == expected

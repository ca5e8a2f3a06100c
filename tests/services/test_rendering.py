"""Message building: what cannot be written as an email header is a problem for that message,
never a crash of the batch; addresses are written in their ASCII form; templates run within
limits of loops, calls, size and time."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from app.domain.eligibility import ascii_address
from app.services import rendering
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


# --------------------------------------------------------------------------------------------
# Render limits: a template cannot tie up the process that renders it.
# --------------------------------------------------------------------------------------------

def render_text(source, name="Ada", fields=None):
    """The text body for one recipient, through the same builder sending uses."""
    builder = MessageBuilder({**CONTENT, "from": "news@shop.example", "text": source})
    data = builder.build(merge={"name": name, "email": "ada@example.org", "fields": fields or {}},
                         address="ada@example.org", token="t", message_id="m@example.org",
                         sent_at=datetime(2026, 11, 23, tzinfo=UTC)).data
    body = data.split(b"\r\n\r\n", 1)[1]
    return binascii.a2b_qp(body).decode("utf-8").replace("\r\n", "\n")


NESTED_RANGES = ("{% for a in range(100) %}{% for b in range(100) %}{% for c in range(100) %}x"
                 "{% endfor %}{% endfor %}{% endfor %}")


@pytest.mark.parametrize(("source", "message"), [
    (NESTED_RANGES, "loops run more than 10,000 times"),
    ("{% for a in 'A' * 1000 %}{% for b in 'B' * 1000 %}{% endfor %}{% endfor %}",
     "loops run more than 10,000 times"),
    ("{{ 'A' * 10000000 }}", "more than 2,000,000 characters"),
    ("{{ 'A' * 10000000000000 }}", "more than 2,000,000 characters"),
    ("{{ [1] * 100000000 }}", "a list of more than 100,000 items"),
    ("{{ range(100000)|join(',') }}", "range() of 100,000 numbers"),
    ("{{ (['A' * 1000000] * 1000)|join }}", "more than 2,000,000 characters"),
    ("{{ (['A' * 1000000] * 1000)|map('upper')|join }}", "more than 2,000,000 characters"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "macros call each other more than 50"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "more than 10,000 calls"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "call themselves too deeply"),
    ("{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
     "{% endfor %}", "more than 2,000,000 characters"),
    ("{% set ns = namespace(x='aa') %}{% for i in range(40) %}{% set ns.x = ns.x.replace('a', 'aa')"
     " %}{% endfor %}", "more than 2,000,000 characters"),
    ("{{ 'a'|center(1000000000) }}", "a width of 1,000,000,000"),
    ("{{ 'a'.ljust(1000000000) }}", "a width of 1,000,000,000"),
    ("{{ '{:>1000000000}'.format(1) }}", "a width of 1,000,000,000"),
    ("{{ '%01000000000d' % 1 }}", "a width of 1,000,000,000"),
    ("{{ 2 ** 100000 }}", "a number too large"),
    ("{{ ([[1] * 1000] * 1000)|sum(start=[]) }}", "a list of more than 100,000 items"),
    ("{{ [range(10000)|list] * 10000 }}", "more than 2,000,000 characters"),
    ("{{ lipsum(100000) }}", "placeholder text length"),
    ("{% for i in range(10000) %}" + "x" * 1000 + "{% endfor %}", "more than 2,000,000 characters"),
])
def test_templates_past_a_limit_are_refused_with_the_limit_named(source, message):
    with pytest.raises(TemplateProblem) as caught:
        render_text(source)
    assert message in str(caught.value)
    assert str(caught.value).startswith("render failed: ")


def test_the_limits_count_per_render_not_per_builder():
    # 60 renders of a template using 9,000 loop turns each: every render starts a fresh count.
    builder_source = "{% for i in range(90) %}{% for j in range(100) %}{% endfor %}{% endfor %}ok"
    assert [render_text(builder_source) for _ in range(3)] == ["ok", "ok", "ok"]


def test_a_render_past_its_time_budget_is_refused(monkeypatch):
    monkeypatch.setattr(rendering, "MAX_RENDER_SECONDS", -1.0)
    with pytest.raises(TemplateProblem, match="took longer than"):
        render_text("{% for i in range(3) %}{{ i }}{% endfor %}")


def test_normal_templates_render_as_before():
    source = ("Hello {{ name }}! {% for i in range(3) %}{{ loop.index }}{% endfor %} "
              "{{ 'ab' * 3 }} {{ name|upper }} {{ '%05d' % 42 }} {{ 'x'|center(5) }} "
              "{{ '{}-{}'.format(1, 2) }} {{ [1, 2]|join('+') }} {{ city|default('?') }} "
              "{{ 1 + 2 }} {{ 2 ** 10 }} {{ 'a' ~ 'b' }} {{ range(10000)|join|length }}\n"
              "{% macro row(x) %}<{{ x }}>{% endmacro %}{% for x in ['a', 'b'] %}{{ row(x) }}"
              "{% endfor %} {{ lipsum(1, html=False)|wordcount > 0 }}")
    assert render_text(source, fields={"city": "Lyon"}) == (
        "Hello Ada! 123 ababab ADA 00042   x   1-2 1+2 Lyon 3 1024 ab 38890\n<a><b> True"
    )


def test_output_just_under_the_limit_is_allowed():
    assert len(render_text("{{ 'A' * 1999000 }}")) == 1_999_000


def test_preview_uses_the_same_limits():
    mailing = SimpleNamespace(subject="Hi {{ name }}", html_body="", from_address="a@b.example",
                              text_body=NESTED_RANGES)
    with pytest.raises(TemplateProblem, match="loops run more than 10,000 times"):
        rendering.preview(mailing, {"name": "Ada", "email": "a@b.example", "fields": {}},
                          "http://localhost")
    mailing.text_body = "Dear {{ name }}"
    shown = rendering.preview(mailing, {"name": "Ada", "email": "a@b.example", "fields": {}},
                              "http://localhost")
    assert shown == {"subject": "Hi Ada", "html": "", "text": "Dear Ada"}


def test_every_template_environment_is_the_limited_sandbox():
    assert isinstance(rendering._HTML_ENV, rendering.LimitedSandbox)
    assert isinstance(rendering._TEXT_ENV, rendering.LimitedSandbox)
    # Checking a template for the editor does not run it: a loop that would be refused compiles.
    rendering.check_template(NESTED_RANGES, "Text body")

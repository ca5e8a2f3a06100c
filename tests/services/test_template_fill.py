"""Templates that only substitute variables are filled in directly: the same output as the
sandboxed render, for any text, any values and either escaping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from app.services.rendering import (
    _HTML_ENV,
    _TEXT_ENV,
    MAX_OUTPUT_CHARS,
    MessageBuilder,
    TemplateLimit,
    _LimitedTemplate,
)

NAMES = ["name", "email", "city", "code", "absent"]

# Template text: anything but what opens a tag, an expression or a comment.
text = st.text(st.characters(blacklist_characters="{}%#", blacklist_categories=("Cs",)),
               max_size=40)
variable = st.builds(
    lambda left, name, right: "{{" + left + name + right + "}}",
    st.sampled_from(["", " ", "- ", "-"]), st.sampled_from(NAMES), st.sampled_from(["", " ", " -", "-"]),
)
source = st.lists(st.one_of(text, variable), max_size=8).map("".join)
value = st.one_of(
    st.text(max_size=30), st.sampled_from(["O'Brien & <Co>", '"quoted"', "a\nb", "", "é😀"]),
    st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3), st.builds(Markup, st.text(max_size=10)),
)
contexts = st.dictionaries(st.sampled_from(NAMES[:-1]), value)


@settings(max_examples=300, deadline=None)
@given(source, contexts)
def test_filling_in_gives_what_the_sandboxed_render_gives(src: str, ctx: dict[str, Any]) -> None:
    for env in (_HTML_ENV, _TEXT_ENV):
        template = env.from_string(src)
        assert isinstance(template, _LimitedTemplate) and template._plan is not None
        sandboxed = env.from_string(src)
        sandboxed._plan = None  # the sandboxed render, as for any other template
        fast, slow = template.render(ctx), sandboxed.render(ctx)
        assert fast == slow
        assert type(fast) is str


@pytest.mark.parametrize("src", [
    "Hello {{ name|upper }}",
    "{% if name %}Hi{% endif %}",
    "{{ name ~ '!' }}",
    "{{ fields.city }}",
    "{{ 'x' }}",
    "{% for i in range(2) %}{{ i }}{% endfor %}",
    "{% set n = 1 %}{{ n }}",
])
def test_anything_beyond_plain_substitution_is_rendered_in_the_sandbox(src: str) -> None:
    template = _HTML_ENV.from_string(src)
    assert template._plan is None
    assert template.render({"name": "ann", "fields": {"city": "Oslo"}}) == \
        _HTML_ENV.from_string(src).render({"name": "ann", "fields": {"city": "Oslo"}})


def test_values_are_escaped_in_html_and_not_in_text() -> None:
    ctx = {"name": "<b>O'Brien & \"Co\"</b>"}
    assert _HTML_ENV.from_string("Hi {{ name }}!").render(ctx) == \
        "Hi &lt;b&gt;O&#39;Brien &amp; &#34;Co&#34;&lt;/b&gt;!"
    assert _TEXT_ENV.from_string("Hi {{ name }}!").render(ctx) == "Hi <b>O'Brien & \"Co\"</b>!"


def test_an_output_past_the_limit_is_refused_as_in_the_sandbox() -> None:
    big = "x" * (MAX_OUTPUT_CHARS // 2 + 1)
    template = _TEXT_ENV.from_string("{{ name }}{{ name }}")
    assert template._plan is not None
    with pytest.raises(TemplateLimit):
        template.render({"name": big})


def test_a_built_message_is_the_same_either_way() -> None:
    content = {
        "subject": "{{ name }}, news", "html": "<p>Hi {{ name }}</p><a href=\"{{ unsubscribe_url }}\">x</a>",
        "text": "Hi {{name}}\nUnsubscribe: {{ unsubscribe_url }}\n", "from": "News <n@shop.example>",
        "reply_to": "", "base_url": "https://sb.example", "bounce_domain": "b.example",
        "boundary": "=_sb_test", "domain": "shop.example", "body_encoding": "7bit-when-possible",
    }
    fast = MessageBuilder(content)
    slow = MessageBuilder(content)
    for template in (slow.subject_t, slow.html_t, slow.text_t):
        assert template._plan is not None
        template._plan = None
    from datetime import UTC, datetime
    for name in ["Ann", "O'Brien & <Co>", "Zoë"]:
        merge = {"name": name, "email": "a@x.example", "fields": {}}
        kwargs = dict(merge=merge, address="a@x.example", token="tok.en", message_id="m@x",
                      sent_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
        assert fast.build(**kwargs).data == slow.build(**kwargs).data


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=127), max_size=30))
def test_a_display_name_is_written_as_the_email_package_writes_it(name: str) -> None:
    import email.utils

    from app.services.rendering import _CONTROL, _format_address

    cleaned = _CONTROL.sub(" ", name).strip()
    expected = email.utils.formataddr((cleaned, "a@x.example")) if cleaned else "a@x.example"
    assert _format_address(name, "a@x.example") == expected


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=120), st.text(st.sampled_from("aé €😀 \n\r\x0b\u2028=?_"), max_size=400)))
def test_a_header_value_is_encoded_as_the_email_package_encodes_it(value: str) -> None:
    from email.header import Header

    from app.services.rendering import _encode_header

    if value.isascii() and "\n" not in value and "\r" not in value:
        assert _encode_header(value) == value
        return
    cleaned = value.replace("\r", " ").replace("\n", " ")
    try:
        expected = Header(cleaned, "utf-8").encode(maxlinelen=998)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            _encode_header(value)
        return
    assert _encode_header(value) == expected


@pytest.mark.parametrize("value", ["é" * 300, "é" * 600, "😀" * 180, "Zoë " * 200, "a\u2028é", "é\x0bb"])
def test_a_long_or_multi_line_header_value_is_split_as_the_email_package_splits_it(value: str) -> None:
    from email.header import Header

    from app.services.rendering import _encode_header

    assert _encode_header(value) == Header(value, "utf-8").encode(maxlinelen=998)

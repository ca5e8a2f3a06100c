"""Inert copies of sent messages: no open pixel, no tracked link, whatever the input."""

from __future__ import annotations

import html
import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.inert import (
    LINK_NOTE,
    PIXEL_NOTE,
    UNKNOWN_LINK_TITLE,
    click_link_ids,
    inert_html,
    inert_text,
    is_tracking,
)

BASE = "https://mail.shop.example"
TOKEN = "MTIz.Xk2q-Abc_9"
PIXEL = f"{BASE}/t/o/{TOKEN}"
LINKS = {5: "https://shop.example/offer?a=1&b=2", 6: "https://shop.example/news"}


def click(link_id: int, token: str = TOKEN) -> str:
    return f"{BASE}/t/c/{token}/{link_id}"


# An oracle written apart from the implementation: every decoding a browser, a CSS parser or the
# web server could apply, then any "t/o/" or "t/c/" that starts a path segment.
SEGMENT = re.compile(r"(?<![a-z0-9\-_.~%])t/[oc]/")


def _css(value: str) -> str:
    return re.sub(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)",
                  lambda m: (chr(int(m.group(1), 16)) if m.group(1) and 0 < int(m.group(1), 16) < 0xD800
                             else m.group(2) or "?"), value, flags=re.S)


def holds_tracking_address(value: str) -> bool:
    seen = value
    for _ in range(10):
        seen = unquote(html.unescape(seen))
    for form in (seen, _css(seen), seen.replace("\\", "/"), _css(seen).replace("\\", "/")):
        form = re.sub(r"[\t\r\n]", "", form).lower()
        if SEGMENT.search(form):
            return True
        for piece in re.split(r"[\s\"'<>()=,]", form):
            normal = posixpath.normpath("/" + piece) if "/." in piece or "//" in piece else piece
            if SEGMENT.search(normal) or SEGMENT.search(normal.replace("//", "/")):
                return True
    return False


# ---------------------------------------------------------------- table-driven


@pytest.mark.parametrize(("source", "expected"), [
    # The open pixel as the sender writes it: left out, the rest untouched.
    (f'<p>Hi</p><img src="{PIXEL}" width="1" height="1" alt="" style="display:block">',
     "<p>Hi</p>"),
    # A tracked link points at its target, which its title shows too.
    (f'<a href="{click(5)}">Offer</a>',
     '<a href="https://shop.example/offer?a=1&amp;b=2" title="https://shop.example/offer?a=1&amp;b=2">'
     "Offer</a>"),
    # An unknown link loses its href; its old title gives way to the note.
    (f'<a title="Go" href="{click(99)}">Other</a>', f'<a title="{UNKNOWN_LINK_TITLE}">Other</a>'),
    # Links and images that are not tracking stay as written.
    ('<a href="https://shop.example/x">x</a><img src="https://cdn.example/logo.png" alt="Logo">',
     '<a href="https://shop.example/x">x</a><img src="https://cdn.example/logo.png" alt="Logo">'),
    # Entities, spacing and a doctype survive.
    ("<!DOCTYPE html><p>Fish &amp; chips &lt;3</p>", "<!DOCTYPE html><p>Fish &amp; chips &lt;3</p>"),
    # Other spellings of the pixel: entities, percent-escapes, backslashes, dot segments, case.
    ('<img src="&#47;t&#47;o&#47;abc"><b>x</b>', "<b>x</b>"),
    ('<img src="https://h/t%2Fo%2Fabc"><b>x</b>', "<b>x</b>"),
    ('<img src="https://h/t\\o\\abc"><b>x</b>', "<b>x</b>"),
    ('<img src="https://h/t/./o/abc"><b>x</b>', "<b>x</b>"),
    ('<IMG SRC="HTTPS://H/T/O/ABC"><b>x</b>', "<b>x</b>"),
    ('<img src="t/o/abc"><b>x</b>', "<b>x</b>"),
    # Other places a pixel can hide lose the attribute, not the element.
    (f'<td background="{PIXEL}" style="background:url({PIXEL})">x</td>', "<td>x</td>"),
    ('<div style="background:url(/t\\2f o/abc)">x</div>', "<div>x</div>"),
    (f'<a href="https://shop.example/" ping="{PIXEL}">x</a>', '<a href="https://shop.example/">x</a>'),
    # A base address, nested documents and refreshes are left out.
    ('<base href="https://h/t/"><img src="o/abc">', '<img src="o/abc">'),
    (f'<iframe src="{BASE}/x"></iframe><p>y</p>', "<p>y</p>"),
    (f'<meta http-equiv="refresh" content="0;url={PIXEL}"><p>y</p>', "<p>y</p>"),
    ('<a href="data:text/html,&lt;b&gt;x">x</a>', "<a>x</a>"),
    # CSS keeps its syntax; an address in it is broken.
    ("<style>a > b { color: red }</style>", "<style>a > b { color: red }</style>"),
    (f"<style>p {{ background: url({PIXEL}) }}</style>",
     "<style>p { background: url(https:\u2215\u2215mail.shop.example\u2215t\u2215o\u2215MTIz.Xk2q-Abc_9) }</style>"),
    # Text that spells a tracking address is no longer one.
    (f"<p>{PIXEL}</p>", "<p>https:\u2215\u2215mail.shop.example\u2215t\u2215o\u2215MTIz.Xk2q-Abc_9</p>"),
    # Look-alikes that are not tracking addresses stay.
    ('<a href="https://twitter.com/at/o/1">t</a>', '<a href="https://twitter.com/at/o/1">t</a>'),
    ("", ""),
])
def test_inert_html(source: str, expected: str) -> None:
    assert inert_html(source, LINKS) == expected


@pytest.mark.parametrize(("source", "expected"), [
    (f"Hello\nSee {click(6)} now\n", "Hello\nSee https://shop.example/news now\n"),
    (f"Pixel {PIXEL}.", f"Pixel {PIXEL_NOTE}"),
    (f"Gone {click(42)}", f"Gone {LINK_NOTE}"),
    ("Unsubscribe: https://mail.shop.example/u/MTIz.x\n", "Unsubscribe: https://mail.shop.example/u/MTIz.x\n"),
    ("", ""),
])
def test_inert_text(source: str, expected: str) -> None:
    assert inert_text(source, LINKS) == expected


def test_a_link_target_that_is_itself_tracking_is_not_shown() -> None:
    out = inert_html(f'<a href="{click(7)}">x</a>', {7: click(5)})
    assert out == f'<a title="{UNKNOWN_LINK_TITLE}">x</a>'


def test_link_ids_are_read_from_every_spelling() -> None:
    source = f'<a href="{click(5)}">a</a> <a href="{BASE}&#47;t&#47;c&#47;{TOKEN}&#47;6">b</a>'
    assert click_link_ids(source) == {5, 6}
    assert click_link_ids("https://shop.example/t/x/5") == set()


@pytest.mark.parametrize("value", [PIXEL, click(5), "/T/C/x/1", "%2ft%2fo%2fx", "&#x2F;t&#x2F;c&#x2F;",
                                   "\\t\\o\\x", "/t/./c/x", "/t/x/../o/y", "url(t/o/x)",
                                   "/t/" + "x/../" * 70 + "o/y", "/t//o/y", "/t/\no/y"])
def test_tracking_spellings(value: str) -> None:
    assert is_tracking(value) and holds_tracking_address(value)


@pytest.mark.parametrize("value", ["https://shop.example/", "https://h/start/o/", "/u/token",
                                   "https://t.co/abc", "tot/o/", "/t/x/..", "/t/ o/y"])
def test_not_tracking(value: str) -> None:
    assert not is_tracking(value) and not holds_tracking_address(value)


# ---------------------------------------------------------------- properties

PIECES = st.sampled_from([
    "/", "\\", "t", "T", "o", "c", "O", "C", "%2f", "%2F", "%25", "&#47;", "&#x2f;", "&sol;", "&amp;",
    "&", "#", ";", "%", ".", "..", "\\2f ", "\\6f", "\t", "\n", " ", "<", ">", '"', "'", "=", "(", ")",
    "<img src=", "<a href=", "<style>", "</style>", "<script>", "</script>", "<!--", "-->", "<base href=",
    "<![CDATA[", "]]>", "url(", "srcset=", "style=", "<svg><image href=", "<textarea>", "<xmp>",
    PIXEL, click(5), click(99), "/t/o/", "/t/c/", "t/o/", "x", "1", "5",
])
MESSY = st.lists(PIECES | st.text(max_size=3), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(MESSY)
def test_html_output_never_holds_a_tracking_address(source: str) -> None:
    out = inert_html(source, LINKS)
    assert not holds_tracking_address(out)
    assert not is_tracking(out)


@settings(max_examples=400, deadline=None)
@given(MESSY)
def test_text_output_never_holds_a_tracking_address(source: str) -> None:
    out = inert_text(source, LINKS)
    assert not holds_tracking_address(out)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_an_inert_result(source: str) -> None:
    assert not holds_tracking_address(inert_html(source, LINKS))
    assert not holds_tracking_address(inert_text(source, LINKS))


LINK_TARGETS = st.dictionaries(st.integers(1, 10**6),
                               st.from_regex(r"https://[a-z]{1,8}\.example/[a-z0-9/?=&]{0,20}", fullmatch=True),
                               min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(LINK_TARGETS, st.text(alphabet="abc <>&\"", max_size=20))
def test_known_links_point_at_their_targets_and_pixels_go(links: dict[int, str], words: str) -> None:
    body = "".join(f'<p>{html.escape(words)}</p><a href="{click(i)}">{i}</a>' for i in links)
    out = inert_html(f"<html><body>{body}<img src=\"{PIXEL}\" width=\"1\"></body></html>", links)
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]*)"', out)]
    expected = [u for u in links.values() if not holds_tracking_address(u)]
    assert hrefs == expected
    assert "<img" not in out and out.count(f"<p>{html.escape(words, quote=False)}</p>") == len(links)

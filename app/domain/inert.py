"""Inert copies of sent messages, for staff to look at without creating recipient activity.

A message as sent carries the open pixel (`/t/o/<token>`) and tracked links
(`/t/c/<token>/<link id>`). Shown as it is, in a sandboxed iframe, the pixel loads (sandboxing does
not stop images) and a click goes through the redirect, so the recipient would become Opened or
Clicked by a member of staff reading their message. The functions here rewrite a message for
display:

- the HTML is parsed and written out again, element by element, with every attribute value quoted
  and every text escaped: an `<img>` whose address is a tracking address is left out, a tracked
  link points at its real target when the link map knows it (the address a click would have been
  redirected to, shown in its title too) and otherwise loses its href, any other attribute holding
  a tracking address is dropped, and `<base>` is left out so no relative address can be turned
  into one;
- in the text part a tracked link is replaced by its target (or a short note when the link map
  does not know it) and the open pixel's address by a short note.

"A tracking address" is judged on what a browser and the web server would make of the value, not
on its spelling: character references and percent-escapes are decoded (repeatedly), CSS escapes
too, backslashes count as slashes, tabs and line breaks inside addresses are ignored, dot segments
are resolved and the case is ignored. Whatever remains suspicious after the rewrite (a tracking
address spelt across an escaped text, say) has its slashes replaced by look-alike characters, so
the output never holds a tracking address, for any input. See docs/ARCHITECTURE.md.

Pure functions: no Flask, no database.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import unquote

PIXEL_NOTE = "[open pixel removed]"
LINK_NOTE = "[tracked link]"
UNKNOWN_LINK_TITLE = "Tracked link (not followed here)"

_MAX_ROUNDS = 8  # decoding rounds; each must change the value, so this is only a backstop
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t\r\n\f]?|\\(.)", re.DOTALL)
_URL_NOISE = re.compile(r"[\t\r\n]")
# "t/o/" or "t/c/" starting a path segment: "/t/o/", or a relative "t/o/" after a delimiter.
_MARKER = re.compile(r"(?<![a-z0-9\-_.~%])t/([oc])/")
_CLICK = re.compile(r"/t/c/([^/?#\s]+)/(\d{1,18})(?![\d])", re.IGNORECASE)
_NAME = re.compile(r"[a-zA-Z_:][-a-zA-Z0-9_:.]*\Z")
_TAG = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*\Z")
# Text-part addresses: a run of non-space characters holding a tracking path.
_TEXT_URL = re.compile(r"\S+")
# Look-alikes that no decoder turns back into a slash, percent sign or ampersand.
_DEFANG = str.maketrans({"/": "\u2215", "\\": "\u29f5", "%": "\uff05", "&": "\uff06"})


def _css_unescape(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            code = int(match.group(1), 16)
            return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
        return match.group(2)

    return _CSS_ESCAPE.sub(replace, value)


def _resolve(path: str) -> str:
    """Dot segments resolved and slashes merged, as a browser and the router would (linear)."""
    if "." not in path and "//" not in path:
        return path
    stack: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment == "..":
            if stack:
                stack.pop()
        elif segment not in (".", ""):
            stack.append(segment)
    head = "/" if path.startswith("/") else ""
    tail = "/" if segments[-1] in ("", ".", "..") and stack else ""
    return head + "/".join(stack) + tail


def _variants(value: str) -> list[str]:
    """The ways a browser, a CSS parser or the web server may read a value, each normalised."""
    decoded = value
    for _ in range(_MAX_ROUNDS):
        step = unquote(html.unescape(decoded), errors="replace")
        if step == decoded:
            break
        decoded = step
    found = []
    for candidate in (decoded, _css_unescape(decoded)):
        for form in (candidate, candidate.replace("\\", "/")):
            form = _URL_NOISE.sub("", form).lower()
            found += [form, _resolve(form)]
    return found


def _kinds(value: str) -> set[str]:
    """"o" and/or "c" for each kind of tracking address the value holds, in any spelling."""
    if not any(ch in value for ch in "&%\\"):
        # Nothing to decode: a marker needs "t/" once tabs and line breaks are gone (dot
        # segments and doubled slashes between "t" and "o" still leave a "t/").
        plain = _URL_NOISE.sub("", value).lower()
        if "t/" not in plain:
            return set()
        return {m.group(1) for form in (plain, _resolve(plain)) for m in _MARKER.finditer(form)}
    return {m.group(1) for form in _variants(value) for m in _MARKER.finditer(form)}


def is_tracking(value: str) -> bool:
    """True when the value holds an open-pixel or click-redirect address in any spelling
    (a relative "t/o/..." too, which resolves to one from a page at the site root)."""
    return bool(_kinds(value))


def defang(value: str) -> str:
    """The value with its slashes, backslashes, percent signs and ampersands swapped for
    look-alikes: still readable, never an address any more."""
    return value.translate(_DEFANG)


def click_link_id(value: str) -> int | None:
    """The link id of a click-redirect address, or None."""
    decoded = html.unescape(value).replace("\\", "/")
    match = _CLICK.search(decoded)
    return int(match.group(2)) if match else None


def click_link_ids(content: str) -> set[int]:
    """Every link id named by a click-redirect address in an HTML or text part."""
    decoded = html.unescape(content).replace("\\", "/")
    return {int(m.group(2)) for m in _CLICK.finditer(decoded)}


def _target(value: str, links: Mapping[int, str]) -> str | None:
    """The real address behind a click-redirect address, when the link map knows a web one."""
    link_id = click_link_id(value)
    target = links.get(link_id) if link_id is not None else None
    if target is None or is_tracking(target):
        return None
    return target if target.strip().lower().startswith(("http://", "https://")) else None


def _attr(name: str, value: str | None) -> str:
    if value is None:
        return f" {name}"
    return f' {name}="{html.escape(value, quote=True)}"'


def _is_data(value: str) -> bool:
    return _URL_NOISE.sub("", value).strip().lower().startswith("data:")


# Elements left out (their content stays): a base address, nested documents and refreshes.
_DROPPED = frozenset({"base", "iframe", "frame", "frameset", "object", "embed", "applet",
                      "portal", "fencedframe"})
_LINKS = frozenset({"a", "area"})
_RAW_TEXT = frozenset({"style", "script"})


class _Rewriter(HTMLParser):
    def __init__(self, links: Mapping[int, str]) -> None:
        super().__init__(convert_charrefs=True)
        self.links = links
        self.out: list[str] = []
        self.raw_tag: str | None = None

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        kept: list[tuple[str, str | None]] = []
        title: str | None = None
        for name, value in attrs:
            if not _NAME.match(name) or is_tracking(name):
                continue
            if value is None:
                kept.append((name, value))
            elif is_tracking(value):
                if name == "href" and tag in _LINKS:
                    target = _target(value, self.links)
                    if target is not None:
                        kept.append(("href", target))
                    title = target if target is not None else UNKNOWN_LINK_TITLE
            elif _is_data(value) and not (tag == "img" and name in ("src", "srcset")):
                continue  # a document in an address could hold anything
            else:
                kept.append((name, value))
        if title is not None:
            kept = [(n, v) for n, v in kept if n != "title"] + [("title", title)]
        return "".join(_attr(n, v) for n, v in kept)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        if not _TAG.match(tag) or tag in _DROPPED:
            return
        if tag == "meta" and any(n == "http-equiv" for n, _ in attrs):
            return  # no refresh, no policy of the message's own
        if tag == "img" and any(v is not None and is_tracking(v) for _, v in attrs):
            return  # the open pixel (or any image fetched from a tracking address)
        self.out.append(f"<{tag}{self._attrs(tag, attrs)}>")
        if tag in _RAW_TEXT:
            if closed:  # a browser ignores the slash and would read on as raw text
                self.out.append(f"</{tag}>")
            else:
                self.raw_tag = tag

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if tag == self.raw_tag:
            self.raw_tag = None
        if _TAG.match(tag) and tag not in _DROPPED:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        text = defang(data) if is_tracking(data) else data
        if self.raw_tag is not None:
            # CSS or script source is kept as written, but may never close its element early.
            self.out.append(re.sub(r"(?i)</(?=" + self.raw_tag + ")", "<\\/", text))
        else:
            self.out.append(html.escape(text, quote=False))

    def handle_comment(self, data: str) -> None:
        text = defang(data) if is_tracking(data) else data
        self.out.append("<!--" + html.escape(text.replace("-", "\u2010"), quote=False) + "-->")

    def handle_decl(self, decl: str) -> None:
        if decl.lower().startswith("doctype") and not is_tracking(decl) and "<" not in decl:
            self.out.append(f"<!{html.escape(decl, quote=False)}>")

    def unknown_decl(self, data: str) -> None:
        """Marked sections (CDATA, Outlook's conditional sections) are dropped."""

    def handle_pi(self, data: str) -> None:
        """Processing instructions mean nothing in HTML; dropped."""


def inert_html(source: str, links: Mapping[int, str] | None = None) -> str:
    """The HTML with its open pixel removed and tracked links pointing at their real targets
    (`links` maps link ids to targets; a link it does not know loses its href)."""
    if not source:
        return source
    parser = _Rewriter(links or {})
    parser.feed(source)
    parser.close()
    out = "".join(parser.out)
    if is_tracking(out):  # a tracking address spelt across pieces: nothing may load from it
        out = defang(out)
    return out


def inert_text(text: str, links: Mapping[int, str] | None = None) -> str:
    """The text part with tracked links replaced by their targets and the open pixel's address
    by a note."""
    if not text:
        return text
    known = links or {}

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        kinds = _kinds(word)
        if not kinds:
            return word
        target = _target(word, known)
        if target is not None:
            return target
        return PIXEL_NOTE if kinds == {"o"} else LINK_NOTE

    out = _TEXT_URL.sub(replace, text)
    if is_tracking(out):
        out = defang(out)
    return out

"""Turning a mailing into the exact bytes each recipient receives.

When sending starts the template is frozen into a MailingVersion: the sandboxed Jinja sources with
every tracked link already rewritten to a click URL, plus everything constant in the MIME message.
Per recipient only what differs is rendered (subject, HTML, text) and slotted into a prebuilt
skeleton, so the build costs a few Jinja renders and two quoted-printable encodings.

The same function rebuilds a message later from the version, the recipient's stored merge data,
its Message-ID and hand-off time, so staff can see byte-for-byte what a client received.
"""

from __future__ import annotations

import binascii
import copy
import email.utils
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.domain.eligibility import ascii_address

# Placeholder for the recipient token: rendered templates carry it and it is swapped for the real
# token afterwards, which is far cheaper than passing per-recipient URLs through Jinja.
TOKEN_SLOT = "SBTOKEN0SLOT"
UNSUBSCRIBE_VAR = "unsubscribe_url"
PREFERENCES_VAR = "preferences_url"


class TemplateProblem(ValueError):
    """A template that cannot compile or render; the message says where."""


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    # Undefined variables render empty: a contact missing a custom field still gets the mail.
    return ImmutableSandboxedEnvironment(autoescape=autoescape, keep_trailing_newline=True)


_HTML_ENV = _environment(True)
_TEXT_ENV = _environment(False)


def check_template(source: str, what: str) -> None:
    """Refuse a template that cannot compile, with the line of the problem."""
    try:
        _HTML_ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"{what}, line {exc.lineno}: {exc.message}") from exc


HREF_RE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def trackable(url: str) -> bool:
    """Only plain web links are tracked: not mailto:, anchors, Jinja expressions or unsubscribe."""
    url = url.strip()
    if "{{" in url or "{%" in url:
        return False
    return url.lower().startswith(("http://", "https://"))


def with_utm(url: str, utm: dict[str, str]) -> str:
    """Add the mailing's UTM tags to a link, keeping any the link already has."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    tags = {f"utm_{k}": v for k, v in utm.items() if v}
    if not tags:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, v) for k, v in tags.items() if k not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def collect_links(html: str) -> list[str]:
    """The distinct trackable hrefs of an HTML body as written, in order of first appearance.

    They are returned as they stand in the source (entities included), which is what
    rewrite_links matches; html.unescape gives the URL a browser would follow.
    """
    seen: dict[str, None] = {}
    for match in HREF_RE.finditer(html):
        link = match.group(3).strip()
        if trackable(link):
            seen.setdefault(link, None)
    return list(seen)


def rewrite_links(html: str, link_ids: dict[str, int], base_url: str) -> str:
    """Point every tracked link at the click endpoint; other hrefs stay as written."""

    def replace(match: re.Match[str]) -> str:
        url = match.group(3).strip()
        link_id = link_ids.get(url)
        if link_id is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{base_url}/t/c/{TOKEN_SLOT}/{link_id}{match.group(2)}"

    return HREF_RE.sub(replace, html)


def add_open_pixel(html: str, base_url: str) -> str:
    pixel = (
        f'<img src="{base_url}/t/o/{TOKEN_SLOT}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    lower = html.lower()
    at = lower.rfind("</body>")
    if at == -1:
        return html + pixel
    return html[:at] + pixel + html[at:]


def _encode_header(value: str) -> str:
    """A header value as 7-bit text: RFC 2047 encoded when it is not plain ASCII."""
    if value.isascii() and "\n" not in value and "\r" not in value:
        return value
    return Header(value.replace("\r", " ").replace("\n", " "), "utf-8").encode(maxlinelen=998)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _format_address(name: str, address: str) -> str:
    """A display name and address for a header. Control characters in the name (a line break
    typed into a contact's name) become spaces, so a name can never start a header of its own;
    an international domain is written in its ASCII form."""
    address = ascii_address(address)
    name = _CONTROL.sub(" ", name or "").strip()
    if not name:
        return address
    if name.isascii():
        return email.utils.formataddr((name, address))
    return f"{_encode_header(name)} <{address}>"


def _qp(text: str) -> bytes:
    """Quoted-printable body with CRLF line ends (what SMTP carries)."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(normalized.encode("utf-8"), istext=True, header=False)
    # b2a_qp keeps bare LF; the wire format wants CRLF, and a leading dot is escaped by smtplib.
    return encoded.replace(b"\n", b"\r\n")


def freeze(mailing: Any, *, link_ids: dict[str, int], base_url: str, bounce_domain: str,
           email_type_name: str = "") -> dict[str, Any]:
    """The content of a MailingVersion: everything needed to build any recipient's message."""
    check_template(mailing.subject, "Subject")
    check_template(mailing.html_body, "HTML body")
    check_template(mailing.text_body, "Text body")
    html = rewrite_links(mailing.html_body, link_ids, base_url) if mailing.html_body else ""
    if html:
        html = add_open_pixel(html, base_url)
    return {
        "subject": mailing.subject,
        "html": html,
        "text": mailing.text_body,
        "from": _format_address(mailing.from_name, mailing.from_address),
        "reply_to": mailing.reply_to,
        "base_url": base_url,
        "bounce_domain": bounce_domain,
        "boundary": f"=_sb_{secrets.token_hex(12)}",
        "domain": mailing.from_address.rpartition("@")[2] or "sendboard.local",
        "mailing_id": mailing.id,
        "email_type": email_type_name,
    }


@dataclass(frozen=True)
class Built:
    envelope_from: str
    data: bytes


class MessageBuilder:
    """Builds recipients' messages for one frozen version; reuse it for a whole batch.

    With a `signer` (a DKIM key of the From domain), every message's final bytes are signed.
    """

    def __init__(self, content: dict[str, Any],
                 signer: Callable[[bytes, datetime], bytes] | None = None) -> None:
        self.content = content
        self.signer = signer
        try:
            self.subject_t = _TEXT_ENV.from_string(content["subject"])
            self.html_t = _HTML_ENV.from_string(content["html"]) if content["html"] else None
            self.text_t = _TEXT_ENV.from_string(content["text"]) if content["text"] else None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"line {exc.lineno}: {exc.message}") from exc
        base = content["base_url"]
        self.unsubscribe_url = f"{base}/u/{TOKEN_SLOT}"
        self.preferences_url = f"{base}/u/{TOKEN_SLOT}/preferences"
        self.boundary = content["boundary"]
        head = [f"From: {content['from']}"]
        if content.get("reply_to"):
            head.append(f"Reply-To: {_format_address('', content['reply_to'])}")
        head.append("MIME-Version: 1.0")
        self.fixed_head = "\r\n".join(head)
        b = self.boundary
        self.text_open = (
            f"--{b}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        self.html_open = (
            f"\r\n--{b}\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        self.close = f"\r\n--{b}--\r\n".encode()

    def context(self, merge: dict[str, Any]) -> dict[str, Any]:
        ctx = dict(merge.get("fields") or {})
        ctx.update(
            name=merge.get("name", ""),
            email=merge.get("email", ""),
            fields=merge.get("fields") or {},
        )
        ctx[UNSUBSCRIBE_VAR] = self.unsubscribe_url
        ctx[PREFERENCES_VAR] = self.preferences_url
        return ctx

    def build(self, *, merge: dict[str, Any], address: str, token: str, message_id: str,
              sent_at: datetime) -> Built:
        """The exact bytes for one recipient; raises TemplateProblem if rendering fails."""
        ctx = self.context(merge)
        try:
            subject = self.subject_t.render(ctx).replace(TOKEN_SLOT, token)
            html = self.html_t.render(ctx).replace(TOKEN_SLOT, token) if self.html_t else ""
            text = self.text_t.render(ctx).replace(TOKEN_SLOT, token) if self.text_t else ""
        except (TemplateError, TypeError, ValueError) as exc:
            raise TemplateProblem(f"render failed: {exc}") from exc
        base = self.content["base_url"]
        unsubscribe = f"{base}/u/{token}"
        envelope_from = f"bounce+{token}@{self.content['bounce_domain']}"
        rid = json.dumps({"sb_rid": token})
        headers = (
            f"{self.fixed_head}\r\n"
            f"To: {_format_address(merge.get('name', ''), address)}\r\n"
            f"Subject: {_encode_header(subject)}\r\n"
            f"Date: {email.utils.format_datetime(sent_at)}\r\n"
            f"Message-ID: <{message_id}>\r\n"
            f"List-Unsubscribe: <{unsubscribe}>, <mailto:{envelope_from}?subject=unsubscribe>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            f"X-Sendboard-Rid: {token}\r\n"
            f"X-SMTPAPI: {{\"unique_args\": {rid}}}\r\n"
            f"X-Mailgun-Variables: {rid}\r\n"
        )
        if html and text:
            body = (
                f"Content-Type: multipart/alternative; boundary=\"{self.boundary}\"\r\n\r\n"
            ).encode() + self.text_open + _qp(text) + self.html_open + _qp(html) + self.close
        else:
            kind = "html" if html else "plain"
            body = (
                f"Content-Type: text/{kind}; charset=\"utf-8\"\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ).encode() + _qp(html or text)
        try:
            head = headers.encode("ascii")
        except UnicodeEncodeError as exc:
            raise TemplateProblem(f"a header cannot be written as 7-bit text: {exc}") from exc
        data = head + body
        if self.signer is not None:
            data = self._sign(data, sent_at)
        return Built(envelope_from, data)

    def _sign(self, data: bytes, sent_at: datetime) -> bytes:
        from app.services.dkim import SigningError

        assert self.signer is not None
        try:
            return self.signer(data, sent_at)
        except SigningError as exc:
            raise TemplateProblem(str(exc)) from exc


@lru_cache(maxsize=32)
def _builder_cache(version_id: int, content_json: str) -> MessageBuilder:
    return MessageBuilder(json.loads(content_json))


def builder_for(version_id: int, content: dict[str, Any]) -> MessageBuilder:
    """The builder of a frozen version, signing with the From domain's DKIM key if it has one.

    The compiled templates are cached per version (a worker process sends many batches of one);
    the key is looked up on each call, so once per batch: a key added or deleted in Settings
    applies from the next batch, and no message costs a query. Raises TemplateProblem when the
    stored key cannot be used.
    """
    from app.services.dkim import SigningError, signer_for

    builder = _builder_cache(version_id, json.dumps(content, sort_keys=True))
    try:
        signer = signer_for(str(content.get("domain") or ""))
    except SigningError as exc:
        raise TemplateProblem(str(exc)) from exc
    if signer is None:
        return builder
    signed = copy.copy(builder)  # shares the compiled templates, not the signer
    signed.signer = signer
    return signed


def new_message_id(recipient_id: int, domain: str) -> str:
    """A globally unique Message-ID (without angle brackets) that names the recipient row."""
    return f"r{recipient_id}.{secrets.token_hex(6)}@{domain}"


def merge_data(contact_name: str, address: str, fields: dict[str, Any] | None) -> dict[str, Any]:
    """The variables one recipient is rendered with, stored so the message can be rebuilt."""
    return {"name": contact_name or "", "email": address, "fields": fields or {}}


def preview(mailing: Any, merge: dict[str, Any], base_url: str) -> dict[str, str]:
    """Subject, HTML and text for one contact, as the editor's preview shows them."""
    for source, what in ((mailing.subject, "Subject"), (mailing.html_body, "HTML body"),
                         (mailing.text_body, "Text body")):
        check_template(source, what)
    builder = MessageBuilder({
        "subject": mailing.subject, "html": mailing.html_body, "text": mailing.text_body,
        "from": mailing.from_address, "reply_to": "", "base_url": base_url,
        "bounce_domain": "preview", "boundary": "preview", "domain": "preview",
    })
    ctx = builder.context(merge)
    try:
        return {
            "subject": builder.subject_t.render(ctx),
            "html": builder.html_t.render(ctx) if builder.html_t else "",
            "text": builder.text_t.render(ctx) if builder.text_t else "",
        }
    except (TemplateError, TypeError, ValueError) as exc:
        raise TemplateProblem(f"render failed: {exc}") from exc

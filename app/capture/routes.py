"""Captured mail pages: the capture server's index, one message's headers, text, HTML and source.

A captured message is shown with its open pixel and tracked links inert (app.services.history),
so reading it here never makes its recipient Opened or Clicked; the source stays byte for byte.
"""

from __future__ import annotations

import math
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_login import login_required

from app.runtime.capture import CaptureStore
from app.services import history

bp = Blueprint("capture", __name__)

PER_PAGE = 50
BOXES = {"capture": "Captured mail", "bounces": "Bounce mailbox"}


def _store(box: str) -> CaptureStore:
    instance = Path(current_app.config["INSTANCE_DIR"])
    if box == "bounces":
        return CaptureStore(current_app.config.get("BOUNCE_MAILDIR") or instance / "bounces")
    return CaptureStore(current_app.config.get("CAPTURE_DIR") or instance / "capture")


def _box() -> str:
    box = request.args.get("box", "capture")
    return box if box in BOXES else "capture"


@bp.route("/captured")
@login_required
def inbox() -> Any:
    box = _box()
    store = _store(box)
    search = request.args.get("q", "").strip()
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    total = store.count_matching(search)
    pages = max(math.ceil(total / PER_PAGE), 1)
    page = min(page, pages)
    messages = store.newest(offset=(page - 1) * PER_PAGE, limit=PER_PAGE, search=search)
    return render_template(
        "capture/inbox.html", box=box, boxes=BOXES, messages=messages, total=total,
        page=page, pages=pages, search=search,
        smtp_port=current_app.config.get("CAPTURE_SMTP_PORT"),
    )


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _part_text(part: EmailMessage | None) -> str:
    if part is None:
        return ""
    try:
        return str(part.get_content())
    except (LookupError, ValueError, UnicodeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _attachments(message: EmailMessage) -> list[dict[str, Any]]:
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        found.append({
            "filename": part.get_filename() or "(no name)",
            "content_type": part.get_content_type(),
            "size": len(payload) if isinstance(payload, bytes) else 0,
        })
    return found


@bp.route("/captured/<name>")
@login_required
def message(name: str) -> Any:
    box = _box()
    store = _store(box)
    try:
        raw = store.raw(name)
    except FileNotFoundError:
        abort(404)
    entry = store.find(name)
    parsed = _parse(raw)
    html_part = parsed.get_body(preferencelist=("html",))
    text_part = parsed.get_body(preferencelist=("plain",))
    html, text = history.inert_parts(
        _part_text(cast(EmailMessage | None, html_part)),
        _part_text(cast(EmailMessage | None, text_part)),
        history.mailing_of_message(str(parsed.get("X-Sendboard-Rid", ""))),
    )
    return render_template(
        "capture/message.html", box=box, boxes=BOXES, name=name, entry=entry,
        headers=[(key, str(value)) for key, value in parsed.items()],
        subject=str(parsed.get("Subject", "")),
        text=text,
        html=html,
        attachments=_attachments(parsed),
        source=raw.decode("utf-8", "replace"),
    )


@bp.route("/captured/<name>/raw")
@login_required
def raw(name: str) -> Any:
    try:
        data = _store(_box()).raw(name)
    except FileNotFoundError:
        abort(404)
    # Served as plain text (never as HTML) and as a download, so nothing in it runs in the app.
    return Response(
        data, mimetype="text/plain",
        headers={"Content-Disposition": f'attachment; filename="{name}.eml"'},
    )

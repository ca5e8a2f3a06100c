"""Recipient-facing endpoints: open pixel, click redirect, unsubscribe (RFC 8058) and preferences.

No login here: the signed token in the URL is the only credential. The pixel and the redirect
must never fail in front of a reader, so a broken token, a deleted recipient or a database hiccup
still gets its GIF (or a 404 for an unknown link), never a 500 or a redirect somewhere else.

Staff never create recipient activity: a pixel or click request that comes with a signed-in staff
session still gets its GIF or its redirect, but records nothing (staff pages show messages with
the pixel and tracked links made inert, app.domain.inert; this covers a URL copied by hand).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from flask_login import current_user
from sqlalchemy import select

from app.extensions import csrf, db
from app.models import Contact, EmailType, Mailing, Recipient, ResponseEvent, TrackedLink
from app.services import responses
from app.services.tokens import read_recipient_token
from app.tracking.heuristics import is_machine_open, is_scanner_click

bp = Blueprint("tracking", __name__)
log = logging.getLogger(__name__)

# The smallest transparent GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_ID = 2**62  # larger ids cannot exist and would overflow the database's integer


def _recipient(token: str) -> Recipient | None:
    rid = read_recipient_token(token) if len(token) <= 200 else None
    if rid is None or not 0 < rid < MAX_ID:
        return None
    return db.session.get(Recipient, rid)


def _from_staff() -> bool:
    """True when the request carries a signed-in staff session."""
    try:
        return bool(current_user.is_authenticated)
    except Exception:  # an unreadable session is nobody's
        db.session.rollback()
        return False


def _delivered_at(recipient: Recipient) -> datetime | None:
    return recipient.response_at if recipient.response == "delivered" else None


@bp.route("/t/o/<token>")
def open_pixel(token: str) -> Response:
    """The 1x1 GIF; records an open (machine-flagged for proxies and prefetch)."""
    try:
        recipient = None if _from_staff() else _recipient(token)
        if recipient is not None:
            now = datetime.now(UTC)
            agent = request.headers.get("User-Agent", "")
            machine = is_machine_open(agent, now, recipient.handed_off_at,
                                      _delivered_at(recipient))
            responses.apply_event(recipient, kind=responses.OPEN, source="tracking",
                                  occurred_at=now, machine=machine,
                                  detail={"user_agent": agent[:300]})
            db.session.commit()
    except Exception:  # the reader must get the image whatever went wrong on our side
        db.session.rollback()
        log.exception("open not recorded for token %.40s", token)
    return Response(PIXEL, mimetype="image/gif", headers=NO_CACHE)


@bp.route("/t/c/<token>/<int:link_id>", methods=["GET", "HEAD"])
def click(token: str, link_id: int) -> Any:
    """Redirect to the link's URL, looked up by id within the recipient's own mailing."""
    try:
        recipient = _recipient(token)
        link = db.session.get(TrackedLink, link_id) if 0 < link_id < MAX_ID else None
    except Exception:
        db.session.rollback()
        log.exception("click lookup failed for token %.40s", token)
        abort(404)
    if recipient is None or link is None or link.mailing_id != recipient.mailing_id:
        abort(404)
    target = link.url
    if _from_staff():
        return redirect(target, code=302)
    try:
        now = datetime.now(UTC)
        agent = request.headers.get("User-Agent", "")
        machine = is_scanner_click(
            request.method, agent, now, recipient.handed_off_at, _delivered_at(recipient),
            previous_click=_previous_click(recipient.id), link_id=link_id,
        )
        responses.apply_event(recipient, kind=responses.CLICK, source="tracking",
                              occurred_at=now, machine=machine,
                              detail={"link_id": link_id, "url": target[:500],
                                      "user_agent": agent[:300]})
        db.session.commit()
    except Exception:  # the click still goes where the reader wanted
        db.session.rollback()
        log.exception("click not recorded for token %.40s", token)
    return redirect(target, code=302)


def _previous_click(recipient_id: int) -> tuple[datetime, int] | None:
    row = db.session.execute(
        select(ResponseEvent.occurred_at, ResponseEvent.detail)
        .where(ResponseEvent.recipient_id == recipient_id, ResponseEvent.kind == responses.CLICK)
        .order_by(ResponseEvent.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    link = (row.detail or {}).get("link_id")
    return row.occurred_at, link if isinstance(link, int) else -1


# ---------------------------------------------------------------- unsubscribe


def _unsubscribe_context(token: str) -> tuple[Recipient, Mailing, Contact | None,
                                               EmailType | None]:
    recipient = _recipient(token)
    if recipient is None:
        abort(404)
    mailing = db.session.get(Mailing, recipient.mailing_id)
    if mailing is None:
        abort(404)
    contact = db.session.get(Contact, recipient.contact_id) if recipient.contact_id else None
    email_type = db.session.get(EmailType, mailing.email_type_id) if mailing.email_type_id else None
    return recipient, mailing, contact, email_type


def _check_csrf() -> None:
    """Human forms carry a CSRF token; the view is exempt only for the RFC 8058 one-click POST."""
    if current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()


@bp.errorhandler(404)
def not_found(error: Any) -> Any:
    return render_template("tracking/not_found.html"), 404


@bp.route("/u/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail providers POST "List-Unsubscribe=One-Click" with no CSRF token
def unsubscribe(token: str) -> Any:
    """GET confirms; POST unsubscribes (one-click from the mail client, or the page's form)."""
    recipient, mailing, contact, email_type = _unsubscribe_context(token)
    now = datetime.now(UTC)
    if request.method == "POST" and request.form.get("List-Unsubscribe") == "One-Click":
        # One-click leaves "this list": the mailing's email type when it has one.
        scope = "type" if email_type else "all"
        responses.apply_event(recipient, kind="unsubscribed", source="one_click",
                              occurred_at=now, detail={"scope": scope})
        db.session.commit()
        return Response("Unsubscribed\n", status=200, mimetype="text/plain")
    if request.method == "POST":
        _check_csrf()
        scope = "type" if request.form.get("scope") == "type" and email_type else "all"
        responses.apply_event(recipient, kind="unsubscribed", source="unsubscribe_page",
                              occurred_at=now, detail={"scope": scope})
        db.session.commit()
        return render_template("tracking/unsubscribed.html", token=token, scope=scope,
                               email_type=email_type)
    return render_template("tracking/unsubscribe.html", token=token, contact=contact,
                           email_type=email_type, mailing=mailing)


@bp.route("/u/<token>/preferences", methods=["GET", "POST"])
@csrf.exempt  # checked by hand below, so a stale form gets our page rather than a bare 400
def preferences(token: str) -> Any:
    """Each email type with its state; leave one, leave all, or subscribe again."""
    recipient, _mailing, contact, _email_type = _unsubscribe_context(token)
    message = ""
    if request.method == "POST" and contact is not None:
        _check_csrf()
        message = _change_preferences(recipient, request.form)
        db.session.commit()
        db.session.expire_all()
        contact = db.session.get(Contact, contact.id)
    email_types = list(db.session.execute(select(EmailType).order_by(EmailType.name)).scalars())
    left = responses.email_types_left(contact.id) if contact is not None else set()
    return render_template("tracking/preferences.html", token=token, contact=contact,
                           email_types=email_types, left=left, message=message)


def _change_preferences(recipient: Recipient, form: Any) -> str:
    now = datetime.now(UTC)
    action = form.get("action", "")
    if action in ("leave_all", "join_all"):
        kind = "unsubscribed" if action == "leave_all" else responses.RESUBSCRIBED
        responses.apply_event(recipient, kind=kind, source="preferences", occurred_at=now,
                              detail={"scope": "all"})
        return ("You will receive no more emails from us." if action == "leave_all"
                else "You are subscribed again.")
    if action in ("leave", "join"):
        try:
            type_id = int(form.get("email_type_id", ""))
        except ValueError:
            abort(400)
        etype = db.session.get(EmailType, type_id) if 0 < type_id < MAX_ID else None
        if etype is None:
            abort(400)
        kind = "unsubscribed" if action == "leave" else responses.RESUBSCRIBED
        responses.apply_event(recipient, kind=kind, source="preferences", occurred_at=now,
                              detail={"scope": "type", "email_type_id": etype.id})
        return (f"You left “{etype.name}”." if action == "leave"
                else f"You are subscribed to “{etype.name}” again.")
    abort(400)

"""The audit log: who changed what, when. One `record(...)` call per staff action."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.extensions import db
from app.models import AuditEntry, User

# Action names, grouped for the filter on the audit page.
ACTIONS = (
    "login", "login.failed", "logout",
    "mailing.create", "mailing.edit", "mailing.owner", "mailing.send", "mailing.test_send",
    "mailing.schedule", "mailing.unschedule", "mailing.cancel", "mailing.resume",
    "mailing.copy", "mailing.delete", "mailing.step",
    "contact.do_not_email", "contact.allow_email", "contact.email_type", "contact.transaction",
    "contact.import", "contact.one_off", "list.create", "segment.save",
    "settings.save", "provider.add", "provider.edit", "provider.default", "email_type.add",
    "dkim.generate", "dkim.upload", "dkim.delete",
    "user.create", "user.edit", "user.password", "user.deactivate", "user.reactivate",
    "api_token.create", "api_token.revoke", "contact.api_create", "contact.api_update",
    "contact.api_bulk", "contact.api_delete", "contact.erase", "list.members_add",
    "list.members_remove",
    "webhook.create", "webhook.edit", "webhook.secret", "webhook.enable", "webhook.disable",
    "webhook.delete", "webhook.send_again",
)
VERBS = {
    "mailing.create": "Created", "mailing.edit": "Edited", "mailing.owner": "Owner changed",
    "mailing.send": "Sent", "mailing.test_send": "Test sent", "mailing.schedule": "Scheduled",
    "mailing.unschedule": "Schedule canceled", "mailing.cancel": "Canceled",
    "mailing.resume": "Resumed", "mailing.copy": "Copied", "mailing.delete": "Deleted",
    "mailing.step": "Follow-up step added",
}


def verb(action: str) -> str:
    """The action in words, for a history line ("Canceled by ... at ...")."""
    return VERBS.get(action, action.replace(".", " ").replace("_", " ").capitalize())


TARGET_KINDS = ("mailing", "contact", "list", "segment", "import", "settings", "provider",
                "email_type", "dkim_key", "user", "api_token", "webhook")


def _actor() -> tuple[int | None, str, str]:
    """The signed-in user and client address of the current request, if any."""
    try:
        from flask import has_request_context, request
        from flask_login import current_user
    except ImportError:  # pragma: no cover
        return None, "", ""
    if not has_request_context():
        return None, "", ""
    ip = request.remote_addr or ""
    if getattr(current_user, "is_authenticated", False):
        return current_user.id, current_user.email, ip
    return None, "", ip


def record(action: str, target: Any = None, detail: str = "", *, kind: str = "",
           user: User | None = None, email: str = "") -> AuditEntry:
    """Record `action` on `target` (a model instance, or an id with `kind`) by the current user.

    `user`/`email` name the actor when nobody is signed in yet (sign-ins, refused sign-ins).
    The entry only joins the caller's unit of work, never commits: the view (or job) commits it
    with the change it records, and a rolled-back change takes its entry with it
    (docs/ARCHITECTURE.md, Layering).
    """
    user_id, user_email, ip = _actor()
    if user is not None:
        user_id, user_email = user.id, user.email
    elif email:
        user_email = email
    target_id = ""
    if target is not None:
        if hasattr(target, "__tablename__"):
            kind = kind or _KINDS.get(type(target).__name__, type(target).__name__.lower())
            target_id = str(getattr(target, "id", getattr(target, "key", "")))
        else:
            target_id = str(target)
    entry = AuditEntry(user_id=user_id, user_email=user_email[:254], action=action[:50],
                       target_kind=kind[:30], target_id=target_id[:64], detail=detail[:500],
                       ip=ip[:64])
    db.session.add(entry)
    return entry


_KINDS = {"Mailing": "mailing", "Contact": "contact", "ContactList": "list",
          "Segment": "segment", "ImportJob": "import", "Provider": "provider",
          "EmailType": "email_type", "DkimKey": "dkim_key", "User": "user"}


@dataclass(frozen=True)
class AuditFilter:
    user_id: int | None = None
    action: str = ""
    target_kind: str = ""
    target_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


def page(filters: AuditFilter, *, before_id: int | None = None,
         size: int = 50) -> tuple[list[AuditEntry], int | None]:
    """Newest first, `size` entries older than `before_id`; and the id to ask for next (or None)."""
    stmt = select(AuditEntry)
    if filters.user_id is not None:
        stmt = stmt.where(AuditEntry.user_id == filters.user_id)
    if filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.target_kind:
        stmt = stmt.where(AuditEntry.target_kind == filters.target_kind)
    if filters.target_id:
        stmt = stmt.where(AuditEntry.target_id == filters.target_id)
    if filters.since is not None:
        stmt = stmt.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEntry.at < filters.until)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    rows = list(db.session.execute(stmt.order_by(AuditEntry.id.desc()).limit(size + 1)).scalars())
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1].id if more and rows else None)


def for_target(kind: str, target_id: int | str, limit: int = 50) -> list[AuditEntry]:
    """The history of one object, newest first."""
    rows, _ = page(AuditFilter(target_kind=kind, target_id=str(target_id)), size=limit)
    return rows

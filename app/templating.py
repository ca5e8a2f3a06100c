"""Every template filter, global and context value of the app, registered by the app factory.

Filters and globals here only format what a view passed: none of them queries the database. A
page that shows rows (a contact's email history, say) gets them from its view as a value
(see docs/ARCHITECTURE.md, Layering).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from flask_login import current_user

from app.domain import roles
from app.domain.lifecycle import STATUS_LABELS, Status
from app.domain.responses import LABELS
from app.domain.responses import Response as RecipientResponse
from app.services import reports
from app.services.audit import verb as audit_verb

# Main navigation: (endpoint, label); an area whose blueprint is not installed is left out.
NAV = [
    ("mailings.index", "Mailings"),
    ("contacts.index", "Contacts"),
    ("capture.inbox", "Captured mail"),
    ("settings.index", "Settings"),
    ("integrations.index", "Integrations"),
    ("auth.users", "Users"),
    ("auth.audit_log", "Audit log"),
]
# What a role must be allowed to see an entry (app.domain.roles); others need "read".
NAV_ACTIONS = {"settings.index": "settings.read", "auth.users": "users.manage",
               "auth.audit_log": "audit.read", "integrations.index": "webhooks.manage"}


# ---------------------------------------------------------------- filters


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def num(value: int) -> str:
    return f"{value:,}"


def duration(value: Any) -> str:
    return reports.human_duration(value)


def capture_time(value: float) -> str:
    """A captured message's arrival (seconds since the epoch), to the second, in UTC."""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


FILTERS = {"when": when, "pct": pct, "num": num, "duration": duration,
           "capture_time": capture_time, "audit_verb": audit_verb}


# ---------------------------------------------------------------- globals


def mailing_status_label(status: str) -> str:
    return STATUS_LABELS[Status(status)]


def response_label(response: str) -> str:
    return LABELS[RecipientResponse(response)]


def reason_label(reason: str) -> str:
    return reports.reason_label(reason)


GLOBALS = {"mailing_status_label": mailing_status_label, "response_label": response_label,
           "reason_label": reason_label}


# ---------------------------------------------------------------- per-request context


def navigation() -> dict[str, Any]:
    """The main navigation the signed-in role may see, and `can(action)` for its buttons."""
    present = current_app.view_functions
    role = getattr(current_user, "role", None)
    return {"nav_items": [(e, label) for e, label in NAV
                          if e in present and roles.can(role, NAV_ACTIONS.get(e, "read"))],
            "can": lambda action: roles.can(role, action)}


def register_templating(app: Flask) -> None:
    for name, function in FILTERS.items():
        app.add_template_filter(function, name)
    for name, function in GLOBALS.items():
        app.add_template_global(function, name)
    app.context_processor(navigation)

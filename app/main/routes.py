from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template
from flask_login import current_user, login_required

from app.domain import roles

bp = Blueprint("main", __name__)

# Main navigation: (endpoint, label); an area whose blueprint is not installed is left out.
NAV = [
    ("mailings.index", "Mailings"),
    ("contacts.index", "Contacts"),
    ("capture.inbox", "Captured mail"),
    ("settings.index", "Settings"),
    ("auth.users", "Users"),
    ("auth.audit_log", "Audit log"),
]
# What a role must be allowed to see an entry (app.domain.roles); others need "read".
NAV_ACTIONS = {"settings.index": "settings.read", "auth.users": "users.manage",
               "auth.audit_log": "audit.read"}


@bp.app_context_processor
def navigation() -> dict[str, Any]:
    present = current_app.view_functions
    role = getattr(current_user, "role", None)
    return {"nav_items": [(e, label) for e, label in NAV
                          if e in present and roles.can(role, NAV_ACTIONS.get(e, "read"))],
            "can": lambda action: roles.can(role, action)}


@bp.route("/home")
@login_required
def home() -> Any:
    return render_template("main/home.html")

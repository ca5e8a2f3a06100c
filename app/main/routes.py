from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template
from flask_login import login_required

bp = Blueprint("main", __name__)

# Main navigation: (endpoint, label); an area whose blueprint is not installed is left out.
NAV = [
    ("mailings.index", "Mailings"),
    ("contacts.index", "Contacts"),
    ("capture.inbox", "Captured mail"),
    ("settings.index", "Settings"),
]


@bp.app_context_processor
def navigation() -> dict[str, Any]:
    present = current_app.view_functions
    return {"nav_items": [(e, label) for e, label in NAV if e in present]}


@bp.route("/home")
@login_required
def home() -> Any:
    return render_template("main/home.html")

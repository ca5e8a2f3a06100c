from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from app.domain import roles

bp = Blueprint("main", __name__)


@bp.route("/home")
@login_required
def home() -> Any:
    disabled = []
    if roles.can(current_user.role, "webhooks.manage"):
        from app.services.outbound import disabled_endpoints

        disabled = disabled_endpoints()
    return render_template("main/home.html", webhook_disabled=disabled)

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("main", __name__)


@bp.route("/home")
@login_required
def home() -> Any:
    return render_template("main/home.html")

"""The home page: what is sending, what stopped and why, what comes next, the monthly quota, the
contacts that can be reached, and how the last mailings did (figures from app.services.reports)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from app import charts
from app.domain import roles
from app.mailings.forms import ActionForm
from app.services import reports

bp = Blueprint("main", __name__)


@bp.route("/home")
@login_required
def home() -> Any:
    disabled = []
    if roles.can(current_user.role, "webhooks.manage"):
        from app.services.outbound import disabled_endpoints

        disabled = disabled_endpoints()
    home = reports.home_figures()
    figure = None
    if home.recent:
        figure = charts.rates_figure_dict(
            [r.mailing.name for r in home.recent], [r.totals.open_rate for r in home.recent],
            [r.totals.click_rate for r in home.recent], [r.bounce_rate for r in home.recent],
            keys=[r.mailing.id for r in home.recent])
    return render_template("main/home.html", webhook_disabled=disabled, home=home,
                           rates_json=charts.to_json(figure) if figure else None,
                           action_form=ActionForm())

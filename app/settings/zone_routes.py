"""The organisation's time zone: send windows are read in it, and contacts without a zone of
their own get local delivery by it. Stored as the `time_zone` setting, over SENDBOARD_TIME_ZONE."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from app.auth.permissions import requires
from app.extensions import db
from app.inputs import posted_zone
from app.mailings.forms import ActionForm
from app.models import Setting
from app.services import audit
from app.settings.routes import bp


@bp.route("/time-zone", methods=["POST"])
@requires("settings.edit")
def set_time_zone() -> Any:
    """Set the organisation's zone; blank returns to SENDBOARD_TIME_ZONE."""
    target = url_for("settings.index") + "#org-zone"
    if not ActionForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(target)
    try:
        zone = posted_zone(request.form.get("time_zone"))
    except ValueError as exc:
        flash(f"Time zone not changed: {exc}.", "error")
        return redirect(target)
    row = db.session.get(Setting, "time_zone")
    if not zone:
        if row is not None:
            db.session.delete(row)
    elif row is None:
        db.session.add(Setting(key="time_zone", value=zone))
    else:
        row.value = zone
    audit.record("settings.time_zone", None, zone or "SENDBOARD_TIME_ZONE", kind="settings")
    db.session.commit()
    flash(f"The organisation's time zone is {zone or 'the SENDBOARD_TIME_ZONE default'} now.",
          "success")
    return redirect(target)

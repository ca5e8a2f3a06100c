"""A contact's own time zone, for mailings delivered at each contact's local time."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for

from app.auth.permissions import requires
from app.contacts.routes import bp
from app.extensions import db
from app.inputs import posted_zone
from app.mailings.forms import ActionForm
from app.models import Contact
from app.services import audit


@bp.route("/<int:contact_id>/time-zone", methods=["POST"])
@requires("contacts.edit")
def set_time_zone(contact_id: int) -> Any:
    """Set (or clear: the organisation's zone) the contact's time zone."""
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        abort(404)
    target = url_for("contacts.detail", contact_id=contact.id)
    if not ActionForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(target)
    try:
        zone = posted_zone(request.form.get("time_zone"))
    except ValueError as exc:
        flash(f"Time zone not changed: {exc}.", "error")
        return redirect(target)
    contact.time_zone = zone
    audit.record("contact.time_zone", contact, zone or "the organisation's zone")
    db.session.commit()
    flash(f"Time zone set to {zone or 'the organisation’s zone'}.", "success")
    return redirect(target)

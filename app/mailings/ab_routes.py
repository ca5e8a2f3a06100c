"""The mailing's A/B test and send window: the editor's setup form and the staff winner pick.

Routes on the mailings blueprint; the templates read their figures through `ab_window_facts`
(app.services.ab_tests and app.services.windows).
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for

from app.auth.permissions import requires
from app.domain.windows import picker_zones
from app.extensions import db
from app.inputs import record_id
from app.mailings.forms import ActionForm
from app.mailings.routes import bp
from app.models import Mailing
from app.services import ab_tests, audit, mailings, windows


def _mailing_or_404(mailing_id: int) -> Mailing:
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        abort(404)
    return mailing


@bp.app_context_processor
def _ab_window_context() -> dict[str, Any]:
    def ab_window_facts(mailing: Mailing) -> dict[str, Any]:
        return {"ab": ab_tests.page_facts(mailing), "win": windows.page_facts(mailing),
                "form": ActionForm()}

    return {"ab_window_facts": ab_window_facts, "picker_zones": picker_zones,
            "org_time_zone": windows.org_zone, "zone_form": ActionForm}


@bp.route("/<int:mailing_id>/ab-window", methods=["POST"])
@requires("mailings.edit")
def save_ab_window(mailing_id: int) -> Any:
    """Store the editor's A/B test and send window setup."""
    mailing = _mailing_or_404(mailing_id)
    target = url_for("mailings.edit", mailing_id=mailing.id) + "#ab-window"
    if not ActionForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(target)
    if mailings.locked(mailing):
        flash("This mailing can no longer be edited: sending has started or is about to.",
              "error")
        return redirect(url_for("mailings.detail", mailing_id=mailing.id))
    try:
        ab_tests.save_setup(mailing, request.form)
        windows.save_setup(mailing, request.form)
    except (ab_tests.AbSetupError, windows.WindowSetupError) as exc:
        db.session.rollback()
        flash(f"A/B test and window not saved: {exc}", "error")
        return redirect(target)
    audit.record("mailing.ab_window", mailing, ab_tests.setup_summary(mailing))
    db.session.commit()
    flash("A/B test and send window saved.", "success")
    return redirect(target)


@bp.route("/<int:mailing_id>/ab-winner", methods=["POST"])
@requires("mailings.send")
def pick_ab_winner(mailing_id: int) -> Any:
    """Staff pick the winner before the wait is over; the remainder goes out with it."""
    mailing = _mailing_or_404(mailing_id)
    target = url_for("mailings.detail", mailing_id=mailing.id) + "#ab-test"
    if not ActionForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(target)
    try:
        variant_id = record_id(request.form.get("variant_id", ""))
    except ValueError:
        variant_id = None
    try:
        chosen = ab_tests.pick(mailing, variant_id)
    except ab_tests.AbSetupError as exc:
        db.session.rollback()
        flash(f"No winner picked: {exc}", "error")
        return redirect(target)
    from app.domain.variants import letter

    audit.record("mailing.ab_winner", mailing,
                 f"variant {letter(chosen.position)} ({chosen.subject[:80]}) picked by hand")
    db.session.commit()
    from jobs.enqueue import kick_sending

    kick_sending()
    flash(f"Variant {letter(chosen.position)} wins; the rest of the audience gets it.", "success")
    return redirect(target)

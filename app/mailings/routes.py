"""Mailings pages: parse the request, call app.services.mailings / reports, render."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required
from wtforms.fields.choices import SelectChoice

from app import charts
from app.auth.permissions import requires
from app.domain import figures
from app.domain.lifecycle import STATUS_LABELS, Action, Status, allowed_actions
from app.domain.responses import Response as RecipientResponse
from app.domain.schedule import ScheduleError, common_zones, local_display, to_utc
from app.domain.windows import picker_zones
from app.extensions import db
from app.inputs import record_id, record_ids, search_text
from app.mailings.forms import (
    ActionForm,
    MailingForm,
    OneOffForm,
    ResendForm,
    ScheduleForm,
    StepForm,
)
from app.models import EmailType, Mailing, Recipient, utcnow
from app.services import audit, chains, conversions, history, mailings, reports, totals
from app.services import contacts as contact_service
from app.services import responses as response_service
from app.services import users as user_service
from app.services.mailings import MailingError

bp = Blueprint("mailings", __name__, url_prefix="/mailings")
log = logging.getLogger(__name__)

# htmx stops polling when a poll is answered with this status.
STOP_POLLING = 286
# The picker's zones (common first, no deprecated aliases); older names still validate.
ZONES = [*picker_zones(), *(z for z in common_zones() if z not in set(picker_zones()))]
ZONE_CHOICES = [SelectChoice(z, z) for z in ZONES]


def _mailing_or_404(mailing_id: int) -> Mailing:
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        abort(404)
    return mailing


def _status_label(status: str) -> str:
    return STATUS_LABELS[Status(status)]


# ---------------------------------------------------------------- the mailings page


@bp.route("")
@login_required
def index() -> Any:
    older = request.args.get("older", type=record_id)
    return render_template("mailings/index.html", overview=reports.overview(older), older=older,
                           interrupted=reports.interrupted_rows(), action_form=ActionForm())


@bp.route("/_current")
@login_required
def current() -> Any:
    """The Current section for its poll; 286 (stop polling) once nothing is sending."""
    rows = reports.current_rows()
    if rows:
        return render_template("mailings/_current.html", rows=rows, action_form=ActionForm())
    # Nothing is sending any more: the finished mailings move to Inactive in the same swap.
    html = render_template("mailings/_current.html", rows=rows, action_form=ActionForm(),
                           inactive=reports.overview().inactive)
    return html, STOP_POLLING


# ---------------------------------------------------------------- editor


def _email_types() -> list[EmailType]:
    return contact_service.email_types()


def _fill_choices(form: MailingForm) -> None:
    form.email_type_id.choices = [SelectChoice(0, "— none —")] + [
        SelectChoice(t.id, t.name) for t in _email_types()]
    form.lists.choices = [SelectChoice(lst.id, f"{lst.name} ({n:,})")
                          for lst, n in contact_service.lists_with_counts()]
    form.owner_id.choices = [SelectChoice(0, "—"), *(
        SelectChoice(u.id, u.name or u.email) for u in user_service.list_users()
        if u.active and u.can("mailings.edit"))]


def _values(form: MailingForm) -> dict[str, Any]:
    until = form.send_until.data
    # A form posted without the owner field keeps the owner as it is.
    owner = {"owner_id": form.owner_id.data or None} if "owner_id" in request.form else {}
    return {
        **owner,
        "name": (form.name.data or "").strip(),
        "subject": form.subject.data or "",
        "from_name": form.from_name.data or "",
        "from_address": form.from_address.data or "",
        "reply_to": form.reply_to.data or "",
        "email_type_id": form.email_type_id.data or None,
        "prevent_duplicates": bool(form.prevent_duplicates.data),
        "html_body": form.html_body.data or "",
        "text_body": form.text_body.data or "",
        "utm_source": form.utm_source.data or "",
        "utm_medium": form.utm_medium.data or "",
        "utm_campaign": form.utm_campaign.data or "",
        "send_until": until.replace(tzinfo=UTC) if until else None,
    }


@bp.route("/new", methods=["GET", "POST"])
@requires("mailings.edit")
def new() -> Any:
    form = MailingForm()
    _fill_choices(form)
    if request.method == "GET" and not form.html_body.data:
        form.html_body.data = STARTER_HTML
        form.text_body.data = STARTER_TEXT
        form.from_address.data = current_user.email
        form.owner_id.data = current_user.id
    if form.validate_on_submit():
        values = _values(form)
        name = values.pop("name")
        values["owner_id"] = values.get("owner_id") or current_user.id
        try:
            mailing = mailings.new_draft(name=name,
                                         list_ids=list(form.lists.data or []), **values)
        except MailingError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            audit.record("mailing.create", mailing, mailing.name)
            db.session.commit()
            flash("Mailing saved as a draft.", "success")
            return redirect(url_for("mailings.edit", mailing_id=mailing.id))
    return render_template("mailings/editor.html", form=form, mailing=None,
                           variables=_variables(), warnings=_warnings(form))


@bp.route("/<int:mailing_id>/edit", methods=["GET", "POST"])
@requires("mailings.edit")
def edit(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    if mailings.locked(mailing) and request.method == "GET":
        flash("This mailing can no longer be edited: sending has started or is about to.", "info")
        return redirect(url_for("mailings.detail", mailing_id=mailing.id))
    form = MailingForm(obj=mailing if request.method == "GET" else None)
    _fill_choices(form)
    if mailing.owner and all(c.value != mailing.owner.id for c in form.owner_id.choices):
        form.owner_id.choices.append(SelectChoice(mailing.owner.id, mailing.owner.email))
    if request.method == "GET":
        form.lists.data = mailings.list_ids(mailing)
        form.email_type_id.data = mailing.email_type_id or 0
        form.owner_id.data = mailing.owner_id or 0
        if mailing.send_until:
            form.send_until.data = mailing.send_until.replace(tzinfo=None)
    if form.validate_on_submit():
        values, owner_before = _values(form), mailing.owner_id
        try:
            mailings.update_content(
                mailing, list_ids=None if mailing.chain_parent_id else list(form.lists.data or []),
                **values)
        except MailingError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            audit.record("mailing.edit", mailing, "content saved")
            if mailing.owner_id != owner_before:
                audit.record("mailing.owner", mailing, mailing.owner.email if mailing.owner
                             else "no owner")
            db.session.commit()
            flash("Mailing saved.", "success")
            return redirect(url_for("mailings.edit", mailing_id=mailing.id))
    return render_template("mailings/editor.html", form=form, mailing=mailing,
                           variables=_variables(), test_form=ActionForm(),
                           warnings=_warnings(form))


def _warnings(form: MailingForm) -> list[str]:
    """The editor's warnings for the content as shown (saved, or as just posted)."""
    from app.services.template_checks import editor_warnings

    return editor_warnings(form.subject.data or "", form.html_body.data or "",
                           form.text_body.data or "")


STARTER_HTML = """<html><body>
<p>Hello {{ name }},</p>
<p>Write your message here.</p>
<p><a href="https://example.org">Read more</a></p>
<p style="font-size:12px;color:#667085"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""
STARTER_TEXT = """Hello {{ name }},

Write your message here.

Unsubscribe: {{ unsubscribe_url }}
"""


def _variables() -> list[str]:
    return ["{{ name }}", "{{ email }}", "{{ unsubscribe_url }}", "{{ preferences_url }}",
            *[f"{{{{ {key} }}}}" for key in _custom_fields()]]


def _custom_fields(sample: int = 200) -> list[str]:
    """Custom field names seen on recent contacts (for the variables hint)."""
    from sqlalchemy import select

    from app.models import Contact

    keys: set[str] = set()
    for fields in db.session.execute(
        select(Contact.fields).order_by(Contact.id.desc()).limit(sample)
    ).scalars():
        keys.update(k for k in (fields or {}) if k.isidentifier())
    return sorted(keys)[:30]


@bp.route("/audience-count", methods=["POST"])
@requires("mailings.edit")
def audience_count() -> Any:
    """The editor's live eligible count for the audience as currently ticked."""
    list_ids = record_ids(request.form.getlist("lists"))
    type_id = request.form.get("email_type_id", type=record_id)
    prevent = request.form.get("prevent_duplicates") in ("y", "on", "true", "1")
    mailing_id = request.form.get("mailing_id", type=record_id)
    parent = None
    if mailing_id:
        mailing = db.session.get(Mailing, mailing_id)
        parent = mailing.chain_parent_id if mailing else None
    if not list_ids and parent is None:
        return render_template("mailings/_audience_count.html", counts=None)
    counts = reports.audience_preview(list_ids, type_id, prevent, mailing_id=mailing_id)
    return render_template("mailings/_audience_count.html", counts=counts)


@bp.route("/<int:mailing_id>/preview")
@login_required
def preview(mailing_id: int) -> Any:
    """The mailing rendered for one contact (by address), or for a sample contact."""
    from app.services.rendering import TemplateProblem, merge_data
    from app.services.rendering import preview as render_preview

    mailing = _mailing_or_404(mailing_id)
    address = request.args.get("contact", "").strip()
    contact = contact_service.find_contact(address) if address else None
    if contact is not None:
        merge = merge_data(contact.name, contact.email, contact.fields)
    else:
        merge = merge_data("Jane Doe", address or "jane@example.org", {})
    try:
        shown = render_preview(mailing, merge, mailings.base_url())
        shown["html"], shown["text"] = history.inert_parts(shown["html"], shown["text"], mailing.id)
        problem = None
    except TemplateProblem as exc:
        shown, problem = None, str(exc)
    from app.services.template_checks import editor_warnings

    return render_template("mailings/_preview.html", shown=shown, problem=problem,
                           contact=contact, address=address,
                           warnings=editor_warnings(mailing.subject, mailing.html_body,
                                                    mailing.text_body))


@bp.route("/<int:mailing_id>/test-send", methods=["POST"])
@requires("mailings.send")
def test_send(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    if ActionForm().validate_on_submit():
        try:
            reports.send_test(mailing, current_user.email, current_user.name or "")
        except reports.TestSendError as exc:
            flash(f"Test not sent: {exc}", "error")
        else:
            audit.record("mailing.test_send", mailing, f"to {current_user.email}")
            db.session.commit()
            flash(f"Test message sent to {current_user.email}.", "success")
    target = "mailings.edit" if not mailings.locked(mailing) else "mailings.detail"
    return redirect(url_for(target, mailing_id=mailing.id))


# ---------------------------------------------------------------- the mailing page


def _chart_figures(mailing: Mailing, counters: dict[str, int],
                   t: reports.EmailTotals) -> dict[str, dict[str, Any] | None]:
    """The mailing page's chart figures (None: nothing to plot yet), from counters alone."""
    # The hourly counters only exist once an open or click has been counted: skip their reads
    # until then, which is every poll of a send nobody has opened yet.
    opens: list[tuple[datetime, int]] = []
    clicks: list[tuple[datetime, int]] = []
    if counters.get("opens", 0) or counters.get("clicks", 0):
        opens = response_service.activity(mailing.id, response_service.OPEN)
        clicks = response_service.activity(mailing.id, response_service.CLICK)
    return {
        "delivery": charts.delivery_figure_dict(dict(t.responses)) if t.audience else None,
        "activity": charts.activity_figure_dict(opens, clicks) if opens or clicks else None,
    }


def _page_state(mailing: Mailing) -> dict[str, Any]:
    counters = totals.get(mailing.id)
    t = reports.email_totals(counters)
    flight = reports.in_flight(mailing.id)  # after the counters: nothing counted twice
    now = utcnow()
    actions = allowed_actions(mailing.status_enum, now=now, send_at=mailing.send_at)
    live = mailing.status_enum in reports.LIVE
    poll = figures.poll_every(mailing.status_enum, batches_in_flight=bool(flight.batches),
                              ended_at=mailing.finished_at or mailing.interrupted_at, now=now)
    chart_figures = _chart_figures(mailing, counters, t)
    return {
        "mailing": mailing,
        "counters": counters,
        "t": t,
        "progress": reports.sending_progress(mailing, t, now, flight),
        "actions": actions,
        "Action": Action,
        "live": live,
        # Seconds between refreshes of #live, None once nothing can change (app.domain.figures).
        "poll": poll,
        "settling": bool(flight.batches) and not live,
        "prepared": t.audience > 0,
        "tabs": reports.TABS,
        "tab_counts": t.tab_counts,
        # The charts are live parts: the page places them, #live carries their figures on every
        # poll (the last one too) and static/js/mailing-charts.js redraws them in place.
        "chart_figures": chart_figures,
        "chart_json": charts.to_json(chart_figures),
        "show_charts": poll is not None or any(chart_figures.values()),
        "locked": mailings.locked(mailing, now),
        "when": local_display(mailing.send_at, mailing.send_at_zone or "UTC")
        if mailing.send_at else "",
        "action_form": ActionForm(),
    }


def _audience_args(mailing: Mailing, counters: dict[str, int]) -> reports.AudiencePage:
    default = "not_sent" if mailing.status == Status.CANCELED.value else "all"
    return reports.audience_page(
        mailing.id, request.args.get("tab", default), q=search_text(request.args.get("q")),
        after=request.args.get("after", type=record_id),
        before=request.args.get("before", type=record_id),
        last=request.args.get("last") == "1", counters=counters,
    )


@bp.route("/<int:mailing_id>")
@login_required
def detail(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    state = _page_state(mailing)
    page = _audience_args(mailing, state["counters"])
    schedule_form = ScheduleForm()
    schedule_form.zone.choices = ZONE_CHOICES
    schedule_form.zone.data = (mailing.send_at_zone if mailing.send_at else "") or _org_zone()
    if mailing.send_at:
        schedule_form.local_time.data = mailing.send_at.astimezone(
            _zone(mailing.send_at_zone)).replace(tzinfo=None)
    parent = db.session.get(Mailing, mailing.chain_parent_id) if mailing.chain_parent_id else None
    resend_form = ResendForm()
    resend_form.subject.data = mailing.subject
    resent_from = (db.session.get(Mailing, mailing.resend_of_id)
                   if mailing.resend_of_id else None)
    snapshot = None
    if resent_from is not None and mailing.status == Status.DRAFT.value:
        preview = mailings.resend_preview(mailing)
        snapshot = {"size": sum(preview.values()),
                    "eligible": preview.get(RecipientResponse.PLANNED.value, 0),
                    "held": {k: v for k, v in preview.items()
                             if k != RecipientResponse.PLANNED.value}}
    return render_template(
        "mailings/detail.html", **state, page=page,
        steps=chains.steps_of(mailing), parent=parent,
        step_plan=chains.plan(mailing, parent),
        conversion=conversions.figures(mailing.id, state["counters"])
        if mailing.started_at else None,
        resend_form=resend_form, resent_from=resent_from, snapshot=snapshot,
        resend_audiences=mailings.RESEND_AUDIENCES,
        schedule_form=schedule_form, step_form=StepForm(),
        owner=mailing.owner.name or mailing.owner.email if mailing.owner else "—",
        list_names=_list_names(mailing), history=audit.for_target("mailing", mailing.id),
    )


def _org_zone() -> str:
    from app.services.windows import org_zone

    return org_zone()


def _zone(name: str | None) -> Any:
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError, OSError):
        return UTC


def _list_names(mailing: Mailing) -> list[str]:
    from sqlalchemy import select

    from app.models import ContactList

    ids = mailings.list_ids(mailing)
    if not ids:
        return []
    return list(db.session.execute(
        select(ContactList.name).where(ContactList.id.in_(ids)).order_by(ContactList.name)
    ).scalars())


@bp.route("/<int:mailing_id>/_live")
@login_required
def live(mailing_id: int) -> Any:
    """Status, progress, totals, audience tab counts and chart figures for the poll. The answer
    sets the pace of the next poll (fast while sending or settling, slow while responses still
    arrive); 286 once nothing can change any more (that last answer still carries the figures)."""
    mailing = _mailing_or_404(mailing_id)
    state = _page_state(mailing)
    html = render_template("mailings/_live.html", **state, oob=True)
    return html, (200 if state["poll"] is not None else STOP_POLLING)


@bp.route("/<int:mailing_id>/audience")
@login_required
def audience(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    counters = totals.get(mailing.id)
    page = _audience_args(mailing, counters)
    return render_template("mailings/_audience.html", mailing=mailing, page=page,
                           tabs=reports.TABS, tab_counts=reports.tab_counts(counters),
                           prepared=reports.email_totals(counters).audience > 0)


@bp.route("/<int:mailing_id>/audience.csv")
@requires("export")
def export(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    tab = request.args.get("tab", "all")
    if tab not in reports.TABS:
        abort(404)
    counters = totals.get(mailing.id)
    filename = f"mailing-{mailing.id}-{tab}.csv"
    return Response(
        stream_with_context(reports.audience_csv(mailing.id, tab, counters)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.route("/<int:mailing_id>/recipients/<int:recipient_id>")
@login_required
def recipient(mailing_id: int, recipient_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    row = db.session.get(Recipient, recipient_id)
    if row is None or row.mailing_id != mailing.id:
        abort(404)
    items = reports.timeline(row, response_service.timeline(row.id))
    return render_template("mailings/recipient.html", mailing=mailing, recipient=row,
                           timeline=items, message=_message_view(row))


@bp.route("/recipients/<int:recipient_id>/_message")
@login_required
def recipient_message(recipient_id: int) -> Any:
    row = db.session.get(Recipient, recipient_id)
    if row is None:
        abort(404)
    return render_template("mailings/_message.html", recipient=row, message=_message_view(row))


def _message_view(row: Recipient) -> reports.MessageView | None:
    return history.message_view(row)  # the pixel and tracked links inert: staff views never count


# ---------------------------------------------------------------- actions


def _back(mailing: Mailing) -> Any:
    target = request.form.get("next", "")
    if target == "index":
        return redirect(url_for("mailings.index"))
    if target == "home":
        return redirect(url_for("main.home"))
    return redirect(url_for("mailings.detail", mailing_id=mailing.id))


def _act(mailing_id: int, do: Any, done: str) -> Any:
    mailing = _mailing_or_404(mailing_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        do(mailing)
    except MailingError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        audit.record(AUDIT_ACTIONS[request.endpoint or ""], mailing, f"now {mailing.status}")
        db.session.commit()  # the unit of work: the service changed, the view commits
        flash(done, "success")
    return _back(mailing)


AUDIT_ACTIONS = {"mailings.cancel": "mailing.cancel", "mailings.unschedule": "mailing.unschedule",
                 "mailings.resume": "mailing.resume", "mailings.send_now": "mailing.send"}


@bp.route("/<int:mailing_id>/cancel", methods=["POST"])
@requires("mailings.cancel")
def cancel(mailing_id: int) -> Any:
    def do(m: Mailing) -> None:
        mailings.cancel(m)
        if m.status != Status.CANCELED.value:
            return  # a schedule canceled: the mailing is a draft again
        if reports.open_batches(m.id):
            flash("A batch was being handed off when you canceled: its last messages are being "
                  "recorded, and the final figures appear on this page by themselves.", "info")
            return
        t = reports.email_totals(totals.get(m.id))
        flash(f"{t.sent:,} sent, {t.not_sent:,} not sent; the recipients not sent are listed "
              "under Not sent.", "info")

    return _act(mailing_id, do, "Mailing canceled.")


@bp.route("/<int:mailing_id>/unschedule", methods=["POST"])
@requires("mailings.schedule")
def unschedule(mailing_id: int) -> Any:
    return _act(mailing_id, mailings.unschedule, "Schedule canceled; the mailing is a draft again.")


@bp.route("/<int:mailing_id>/resume", methods=["POST"])
@requires("mailings.resume")
def resume(mailing_id: int) -> Any:
    left: list[int] = []

    def do(m: Mailing) -> None:
        left.append(mailings.resume(m))

    mailing = _mailing_or_404(mailing_id)
    answer = _act(mailing_id, do, "Sending resumed where it stopped.")
    if left:
        flash(f"{left[0]:,} recipient{'s' if left[0] != 1 else ''} remain to be sent; nobody "
              f"who already got {mailing.name} gets it twice.", "info")
    return answer


@bp.route("/<int:mailing_id>/send-now", methods=["POST"])
@requires("mailings.send")
def send_now(mailing_id: int) -> Any:
    return _act(mailing_id, mailings.send_now, "Sending started.")


@bp.route("/<int:mailing_id>/copy", methods=["POST"])
@requires("mailings.copy")
def copy(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        clone = mailings.copy(mailing, owner_id=current_user.id)
    except MailingError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _back(mailing)
    audit.record("mailing.copy", mailing, f"copied into mailing {clone.id}")
    db.session.commit()
    flash("Copied into a new draft.", "success")
    return redirect(url_for("mailings.edit", mailing_id=clone.id))


@bp.route("/<int:mailing_id>/delete", methods=["POST"])
@requires("mailings.delete")
def delete(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    name = mailing.name
    try:
        mailings.delete_mailing(mailing)
    except MailingError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _back(mailing)
    audit.record("mailing.delete", mailing_id, name, kind="mailing")
    db.session.commit()
    flash(f"Mailing {name} deleted.", "success")
    return redirect(url_for("mailings.index"))


@bp.route("/<int:mailing_id>/schedule", methods=["POST"])
@requires("mailings.schedule")
def schedule(mailing_id: int) -> Any:
    mailing = _mailing_or_404(mailing_id)
    form = ScheduleForm()
    form.zone.choices = ZONE_CHOICES
    if not form.validate_on_submit() or form.local_time.data is None:
        for errors in form.errors.values():
            for error in errors:
                flash(f"Not scheduled: {error}", "error")
        return _back(mailing)
    try:
        resolved = mailings.schedule(mailing, form.local_time.data, form.zone.data or "UTC")
    except MailingError as exc:
        db.session.rollback()
        flash(f"Not scheduled: {exc}", "error")
        return _back(mailing)
    audit.record("mailing.schedule", mailing, local_display(resolved.utc, resolved.zone))
    db.session.commit()
    flash(f"Scheduled for {local_display(resolved.utc, resolved.zone)}.", "success")
    if resolved.note:
        flash(resolved.note, "info")
    return _back(mailing)


@bp.route("/schedule-check")
@login_required
def schedule_check() -> Any:
    """What a local time in a zone means: its UTC instant, a DST note, or why it is refused."""
    raw, zone = request.args.get("local_time", ""), request.args.get("zone", "UTC")
    message, kind = "", "muted"
    if raw:
        try:
            resolved = to_utc(datetime.strptime(raw, "%Y-%m-%dT%H:%M"), zone)
        except ValueError as exc:  # ScheduleError is a ValueError; so is a malformed time
            message, kind = (str(exc) if isinstance(exc, ScheduleError)
                             else "Pick a date and time."), "error"
        else:
            message = f"= {resolved.utc:%Y-%m-%d %H:%M} UTC"
            if resolved.note:
                message, kind = f"{message}. {resolved.note}", "warn"
    return render_template("mailings/_schedule_check.html", message=message, kind=kind)


@bp.route("/<int:mailing_id>/steps", methods=["POST"])
@requires("mailings.edit")
def add_step(mailing_id: int) -> Any:
    parent = _mailing_or_404(mailing_id)
    form = StepForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(f"Step not added: {error}", "error")
        return _back(parent)
    try:
        step = chains.add_step(
            parent, name=form.name.data or "", delay_days=int(form.delay_days.data or 0),
            condition=form.condition.data or "all", owner_id=current_user.id,
            subject=parent.subject, from_name=parent.from_name,
            from_address=parent.from_address, reply_to=parent.reply_to,
            html_body=parent.html_body, text_body=parent.text_body,
        )
    except MailingError as exc:
        db.session.rollback()
        flash(f"Step not added: {exc}", "error")
        return _back(parent)
    audit.record("mailing.step", parent, f"step mailing {step.id}")
    db.session.commit()
    plan = chains.plan(step, parent)
    if step.status == Status.SCHEDULED.value and plan is not None:
        flash(f"Follow-up step added and scheduled. {plan.text} Edit its content until then.",
              "success")
    elif plan is not None and plan.due:
        flash(f"Follow-up step added as a draft. {plan.text}", "info")
        return redirect(url_for("mailings.detail", mailing_id=step.id))
    elif plan is not None and plan.problem:
        flash(f"Follow-up step added as a draft. {plan.problem}", "error")
    else:
        flash("Follow-up step added as a draft; edit its content now. It "
              f"{plan.text[0].lower() + plan.text[1:] if plan else 'waits for its parent.'}",
              "success")
    return redirect(url_for("mailings.edit", mailing_id=step.id))


@bp.route("/<int:mailing_id>/conversions", methods=["POST"])
@requires("mailings.edit")
def backfill_conversions(mailing_id: int) -> Any:
    """Credit transactions recorded without attribution (CSV imports) to this mailing's
    clicks, each to the last click before it."""
    mailing = _mailing_or_404(mailing_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    gained = conversions.backfill(mailing.id)
    db.session.commit()
    flash(f"{gained:,} more conversion{'s' if gained != 1 else ''} credited to this mailing.",
          "success")
    return _back(mailing)


@bp.route("/<int:mailing_id>/resend", methods=["POST"])
@requires("mailings.copy")
def resend(mailing_id: int) -> Any:
    """One click from a Sent mailing: a linked draft to its non-openers, or to the recipients
    deferred or soft-bounced, its audience a snapshot taken now."""
    parent = _mailing_or_404(mailing_id)
    form = ResendForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(f"Not created: {error}", "error")
        return _back(parent)
    try:
        again = mailings.resend(parent, form.audience.data or "", owner_id=current_user.id,
                                subject=form.subject.data or "")
    except MailingError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _back(parent)
    size = mailings.resend_size(again)
    audit.record("mailing.copy", parent, f"sent again as draft {again.id} to {size:,} "
                 f"{mailings.RESEND_AUDIENCES[again.resend_audience]}")
    db.session.commit()
    flash(f"Draft created for {size:,} {mailings.RESEND_AUDIENCES[again.resend_audience]}. "
          "Check it, then send it.", "success")
    return redirect(url_for("mailings.detail", mailing_id=again.id))


# ---------------------------------------------------------------- one-off email


@bp.route("/one-off/<int:contact_id>", methods=["POST"])
@requires("mailings.one_off")
def one_off(contact_id: int) -> Any:
    from app.services.one_off import OneOffError, send_one_off

    contact = contact_service.get_contact(contact_id)
    if contact is None:
        abort(404)
    form = OneOffForm()
    back = url_for("contacts.detail", contact_id=contact.id) + "#history"
    if not form.validate_on_submit():
        return _one_off_refused(contact.id, form, [
            f"{form[name].label.text}: {error}"
            for name, field_errors in form.errors.items() for error in field_errors])
    try:
        send_one_off(contact, owner_id=current_user.id, subject=form.subject.data or "",
                     text_body=form.text_body.data or "", from_name=form.from_name.data or "",
                     from_address=form.from_address.data or "")
    except OneOffError as exc:
        db.session.rollback()
        return _one_off_refused(contact.id, form, [str(exc)])
    else:
        audit.record("contact.one_off", contact, form.subject.data or "")
        db.session.commit()
        flash(f"Email to {contact.email} is on its way; it appears in the history below.",
              "success")
    return redirect(back)


def _one_off_refused(contact_id: int, form: OneOffForm, errors: list[str]) -> Any:
    """The contact page again, with the one-off form as typed and the reasons beside it."""
    from app.contacts.routes import detail_page

    return detail_page(contact_id, one_off_form=form, one_off_errors=errors), 422


from app.mailings import ab_routes as _ab_routes  # noqa: E402,F401 - A/B test and window routes

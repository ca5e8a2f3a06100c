"""Contacts pages: parse the request, call app.services.contacts, render."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from werkzeug.utils import secure_filename

from app.auth.permissions import requires
from app.contacts.forms import (
    ActionForm,
    DoNotEmailForm,
    ListForm,
    SegmentForm,
    TransactionForm,
    UploadForm,
)
from app.domain.segments import SegmentError
from app.domain.segments import parse as parse_rule
from app.extensions import db
from app.inputs import record_id, search_text
from app.mailings.forms import OneOffForm
from app.models import Contact, EmailType
from app.services import audit, reports, settings
from app.services import contacts as service
from app.services import segments as segment_service

bp = Blueprint("contacts", __name__, url_prefix="/contacts")
log = logging.getLogger(__name__)

PAGE_SIZE = 50
FLAG_LABELS = {
    "": "All contacts",
    "do_not_email": "Do not email",
    "invalid": "Invalid address",
    "inactive": "Inactive",
}
# htmx stops polling when a poll is answered with this status.
STOP_POLLING = 286


def _contact_or_404(contact_id: int) -> Contact:
    contact = service.get_contact(contact_id)
    if contact is None:
        abort(404)
    return contact


@bp.route("")
@login_required
def index() -> Any:
    q = search_text(request.args.get("q"))
    flag = request.args.get("flag", "")
    if flag not in FLAG_LABELS:
        flag = ""
    after = request.args.get("after", type=record_id)
    list_id = request.args.get("list", type=record_id)
    inactivity_days = int(settings.get("inactivity_days"))
    contacts, next_after = service.search_contacts(
        q, flag or None, after, PAGE_SIZE, inactivity_days=inactivity_days, list_id=list_id
    )
    contact_list = service.get_list(list_id) if list_id is not None else None
    return render_template(
        "contacts/index.html",
        contacts=contacts,
        next_after=next_after,
        q=q,
        flag=flag,
        after=after,
        flags=FLAG_LABELS,
        contact_list=contact_list,
        inactive_ids={c.id for c in contacts if service.is_inactive(c, inactivity_days)},
    )


@bp.route("/<int:contact_id>")
@login_required
def detail(contact_id: int) -> Any:
    return detail_page(contact_id)


def detail_page(contact_id: int, one_off_form: OneOffForm | None = None,
                one_off_errors: list[str] | None = None) -> str:
    """The contact page; a refused one-off email shows again as typed, with its reasons."""
    contact = _contact_or_404(contact_id)
    inactivity_days = int(settings.get("inactivity_days"))
    if one_off_form is None:
        one_off_form = OneOffForm()
        if not one_off_form.from_address.data and current_user.is_authenticated:
            one_off_form.from_address.data = current_user.email
    return render_template(
        "contacts/detail.html",
        contact=contact,
        history=reports.contact_history(contact.id),
        one_off_form=one_off_form,
        one_off_errors=one_off_errors or [],
        inactive=service.is_inactive(contact, inactivity_days),
        inactivity_days=inactivity_days,
        lists=service.contact_lists(contact.id),
        transactions=service.contact_transactions(contact.id),
        email_types=service.email_types(),
        opted_out=service.type_opt_outs(contact.id),
        transaction_form=TransactionForm(),
        dne_form=DoNotEmailForm(),
        action_form=ActionForm(),
    )


@bp.route("/<int:contact_id>/transactions", methods=["POST"])
@requires("contacts.edit")
def add_transaction(contact_id: int) -> Any:
    contact = _contact_or_404(contact_id)
    form = TransactionForm()
    if form.validate_on_submit() and form.occurred_at.data is not None:
        try:
            service.record_transaction(
                contact.id,
                form.occurred_at.data,  # taken as UTC, as the label says
                reference=form.reference.data or "",
                amount=form.amount.data or "",
                source="staff",
            )
        except service.ContactError as exc:
            db.session.rollback()
            flash(f"Transaction not recorded: {form.occurred_at.label.text}: {exc}.", "error")
        else:
            audit.record("contact.transaction", contact, form.reference.data or "")
            db.session.commit()
            flash("Transaction recorded.", "success")
    else:
        for name, field_errors in form.errors.items():
            for error in field_errors:
                flash(f"Transaction not recorded: {form[name].label.text}: {error}", "error")
    return redirect(url_for("contacts.detail", contact_id=contact.id))


@bp.route("/<int:contact_id>/do-not-email", methods=["POST"])
@requires("contacts.edit")
def do_not_email(contact_id: int) -> Any:
    contact = _contact_or_404(contact_id)
    form = DoNotEmailForm()
    if form.validate_on_submit():
        service.set_do_not_email(contact, form.reason.data or "")
        audit.record("contact.do_not_email", contact, form.reason.data or "")
        db.session.commit()
        flash("The contact will not be emailed.", "success")
    return redirect(url_for("contacts.detail", contact_id=contact.id))


@bp.route("/<int:contact_id>/allow-email", methods=["POST"])
@requires("contacts.edit")
def allow_email(contact_id: int) -> Any:
    contact = _contact_or_404(contact_id)
    if ActionForm().validate_on_submit():
        service.clear_do_not_email(contact)
        audit.record("contact.allow_email", contact)
        db.session.commit()
        flash("The contact can be emailed again.", "success")
    return redirect(url_for("contacts.detail", contact_id=contact.id))


@bp.route("/<int:contact_id>/types/<int:email_type_id>", methods=["POST"])
@requires("contacts.edit")
def toggle_type(contact_id: int, email_type_id: int) -> Any:
    contact = _contact_or_404(contact_id)
    if db.session.get(EmailType, email_type_id) is None:
        abort(404)
    if ActionForm().validate_on_submit():
        if request.form.get("action") == "opt_in":
            service.opt_in_type(contact.id, email_type_id)
        else:
            service.opt_out_type(contact.id, email_type_id)
        audit.record("contact.email_type", contact,
                     f"{request.form.get('action') or 'opt_out'} type {email_type_id}")
        db.session.commit()
    return redirect(url_for("contacts.detail", contact_id=contact.id))


@bp.route("/lists", methods=["GET", "POST"])
@requires("contacts.edit", writes_only=True)
def lists() -> Any:
    form = ListForm()
    if form.validate_on_submit():
        try:
            created = service.create_list(form.name.data or "", form.description.data or "")
        except service.ContactError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            audit.record("list.create", created, created.name)
            db.session.commit()
            flash(f"List {created.name} created.", "success")
            return redirect(url_for("contacts.lists"))
    every = service.lists_with_counts()
    rules = {lst.id: segment_service.description(lst) for lst, _ in every if lst.rule is not None}
    return render_template("contacts/lists.html", form=form, lists=every, rules=rules)


def _segment_form(segment: Any = None) -> SegmentForm:
    form = SegmentForm()
    if segment is not None and request.method == "GET":
        form.name.data = segment.name
        form.description.data = segment.description
        form.fill(segment.rule or {})
    form.set_lists([(str(lst.id), lst.name) for lst, _ in service.lists_with_counts()
                    if lst.rule is None and (segment is None or lst.id != segment.id)])
    return form


def _save_segment(form: SegmentForm, segment: Any = None) -> str | None:
    """Create or update the segment from the form; the problem in words, or None when saved."""
    try:
        rule = parse_rule(form.rule_data())
        if segment is None:
            segment = segment_service.create_segment(form.name.data or "", rule,
                                                     form.description.data or "")
        else:
            segment_service.update_segment(segment, name=form.name.data or "", rule=rule,
                                           description=form.description.data or "")
    except (SegmentError, service.ContactError) as exc:
        db.session.rollback()
        return str(exc)
    audit.record("segment.save", segment.id, segment.name, kind="segment")
    db.session.commit()
    flash(f"Segment {segment.name} saved: {segment_service.count(rule):,} contacts match now.",
          "success")
    return None


@bp.route("/segments/new", methods=["GET", "POST"])
@requires("contacts.edit")
def new_segment() -> Any:
    form = _segment_form()
    problem = None
    if form.validate_on_submit():
        problem = _save_segment(form)
        if problem is None:
            return redirect(url_for("contacts.lists"))
    return render_template("contacts/segment.html", form=form, segment=None, problem=problem)


@bp.route("/segments/<int:segment_id>", methods=["GET", "POST"])
@requires("contacts.edit", writes_only=True)
def edit_segment(segment_id: int) -> Any:
    segment = service.get_list(segment_id)
    if segment is None or segment.rule is None:
        abort(404)
    form = _segment_form(segment)
    problem = None
    if form.validate_on_submit():
        problem = _save_segment(form, segment)
        if problem is None:
            return redirect(url_for("contacts.lists"))
    return render_template("contacts/segment.html", form=form, segment=segment, problem=problem)


@bp.post("/segments/count")
@requires("contacts.edit")
def segment_count() -> Any:
    """The live count under the segment form: how many contacts the rule as typed picks now."""
    form = _segment_form()
    try:
        rule = parse_rule(form.rule_data())
        matching: int | None = segment_service.count(rule)
        problem = None
    except SegmentError as exc:
        matching, problem = None, str(exc)
    return render_template("contacts/_segment_count.html", matching=matching, problem=problem)


@bp.route("/upload", methods=["GET", "POST"])
@requires("contacts.import")
def upload() -> Any:
    form = UploadForm()
    if form.validate_on_submit():
        storage = form.file.data
        uploads = Path(current_app.config["INSTANCE_DIR"]) / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        # A random name on disk: the user's file name is only shown, never used as a path.
        path = uploads / f"{uuid.uuid4().hex}.csv"
        storage.save(path)  # streams to disk; the upload is never held in memory whole
        filename = secure_filename(storage.filename or "") or "upload.csv"
        import_job = service.create_import_job(filename, user_id=current_user.id)
        audit.record("contact.import", import_job, filename)
        db.session.commit()  # before the worker looks for the import
        _start_import(import_job.id, str(path), (form.list_name.data or "").strip() or None)
        return redirect(url_for("contacts.import_status", import_id=import_job.id))
    return render_template("contacts/upload.html", form=form)


def _start_import(import_id: int, path: str, list_name: str | None) -> None:
    """Hand the import to a worker; without Redis, run it here so the upload is not lost."""
    from redis.exceptions import RedisError

    from app import redis_conn
    from jobs.imports import import_contacts

    try:
        redis_conn.queue("default").enqueue(
            import_contacts, import_id, path, list_name, job_timeout=3600
        )
    except (RuntimeError, RedisError, OSError) as exc:
        log.warning("Redis unavailable (%s): importing %s in the web process", exc, import_id)
        import_contacts(import_id, path, list_name)


@bp.route("/imports/<int:import_id>")
@login_required
def import_status(import_id: int) -> Any:
    import_job = service.get_import_job(import_id)
    if import_job is None:
        abort(404)
    return render_template("contacts/import_status.html", job=import_job)


@bp.route("/imports/<int:import_id>/progress")
@login_required
def import_progress(import_id: int) -> Any:
    import_job = service.get_import_job(import_id)
    if import_job is None:
        abort(404)
    html = render_template("contacts/_import_progress.html", job=import_job)
    return html, (200 if import_job.status == "running" else STOP_POLLING)


from app.contacts import zone_routes as _zone_routes  # noqa: E402,F401 - a contact's time zone

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth.forms import ActiveForm, EditUserForm, LoginForm, PasswordForm, UserForm
from app.auth.permissions import requires
from app.extensions import db
from app.models import utcnow
from app.services import audit, throttle
from app.services import users as user_service

bp = Blueprint("auth", __name__)

FAILED = "Wrong email or password."


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: never an open redirect to another host."""
    if not target:
        return url_for("main.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("main.home")
    if "\\" in target:
        return url_for("main.home")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email = (form.email.data or "").strip()
        keys = throttle.keys(email, request.remote_addr or "")
        until = throttle.locked_until(keys)
        if until is not None:
            minutes = max(1, -(-int((until - utcnow()).total_seconds()) // 60))
            audit.record("login.failed", detail="refused: too many failed sign-ins",
                         email=email)
            db.session.commit()
            flash(f"Too many failed sign-ins. Try again in {minutes} minute"
                  f"{'s' if minutes > 1 else ''}.", "error")
            return render_template("auth/login.html", form=form), 429
        user = user_service.authenticate(email, form.password.data or "")
        if user is None:
            throttle.fail(keys)
            audit.record("login.failed", email=email)
            db.session.commit()
            flash(FAILED, "error")
            status = 200
        else:
            throttle.succeed(keys[0])
            login_user(user, remember=bool(form.remember.data))
            audit.record("login", user, user=user)
            db.session.commit()
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    user = current_user._get_current_object()
    audit.record("logout", user)
    user_service.end_sessions(user)  # every copy of this session's cookies stops working
    db.session.commit()
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/users", methods=["GET", "POST"])
@requires("users.manage")
def users() -> Any:
    form = UserForm()
    if form.validate_on_submit():
        try:
            user = user_service.create_user(
                email=form.email.data or "",
                password=form.password.data or "",
                name=form.name.data or "",
                role=form.role.data or "editor",
            )
        except user_service.UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            audit.record("user.create", user, f"{user.email} as {user.role}")
            db.session.commit()
            flash(f"User {form.email.data} created.", "success")
            return redirect(url_for("auth.users"))
    return render_template("auth/users.html", form=form, users=user_service.list_users(),
                           active_form=ActiveForm())


def _user_or_404(user_id: int) -> Any:
    user = user_service.get_user(user_id)
    if user is None:
        abort(404)
    return user


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@requires("users.manage")
def edit_user(user_id: int) -> Any:
    user = _user_or_404(user_id)
    form = EditUserForm(obj=user if request.method == "GET" else None)
    if request.method == "GET":
        form.role.data = user.role_label.lower()
    if form.validate_on_submit():
        try:
            changed = user_service.update_user(user, name=form.name.data or "",
                                               role=form.role.data or "")
        except user_service.UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            if changed:
                audit.record("user.edit", user, ", ".join(changed))
            db.session.commit()
            flash(f"User {user.email} saved.", "success")
            return redirect(url_for("auth.edit_user", user_id=user.id))
    return render_template("auth/user.html", user=user, form=form,
                           password_form=PasswordForm(), active_form=ActiveForm())


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@requires("users.manage")
def reset_password(user_id: int) -> Any:
    user = _user_or_404(user_id)
    form = PasswordForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(f"Password not changed: {error}", "error")
        return redirect(url_for("auth.edit_user", user_id=user.id))
    given = form.password.data or None
    password = user_service.set_password(user, given)
    audit.record("user.password", user, "set by an admin" if given else "generated")
    db.session.commit()
    if given:
        flash(f"Password of {user.email} changed; their sessions have ended.", "success")
        return redirect(url_for("auth.edit_user", user_id=user.id))
    # Shown once, on this response only: never stored in plain text, never in a flash cookie.
    return render_template("auth/user.html", user=user, form=EditUserForm(obj=user),
                           password_form=PasswordForm(), active_form=ActiveForm(),
                           generated=password)


@bp.route("/users/<int:user_id>/active", methods=["POST"])
@requires("users.manage")
def set_active(user_id: int) -> Any:
    user = _user_or_404(user_id)
    if not ActiveForm().validate_on_submit():
        abort(400)
    active = request.form.get("active") == "1"
    try:
        user_service.set_active(user, active)
    except user_service.UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        audit.record("user.reactivate" if active else "user.deactivate", user)
        db.session.commit()
        flash(f"User {user.email} {'reactivated' if active else 'deactivated; their sessions have ended'}.",
              "success")
    return redirect(url_for("auth.users") if request.form.get("next") == "list"
                    else url_for("auth.edit_user", user_id=user.id))


# ---------------------------------------------------------------- audit log


def _date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _int(raw: str | None) -> int | None:
    if raw and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


@bp.route("/audit")
@requires("audit.read")
def audit_log() -> Any:
    args = request.args
    since, until = _date(args.get("since")), _date(args.get("until"))
    filters = audit.AuditFilter(
        user_id=_int(args.get("user")),
        action=args.get("action", "") if args.get("action", "") in audit.ACTIONS else "",
        target_kind=(args.get("kind", "") if args.get("kind", "") in audit.TARGET_KINDS
                     else ""),
        target_id=(args.get("target", "") or "")[:64],
        since=since, until=until + timedelta(days=1) if until else None,
    )
    entries, next_id = audit.page(filters, before_id=_int(args.get("before")))
    query = {k: v for k, v in args.items() if k != "before" and v}
    return render_template("auth/audit.html", entries=entries, next_id=next_id, query=query,
                           filters=filters, users=user_service.list_users(),
                           actions=audit.ACTIONS, kinds=audit.TARGET_KINDS, args=args)

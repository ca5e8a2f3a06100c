from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth.forms import LoginForm, UserForm
from app.services import users as user_service

bp = Blueprint("auth", __name__)


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
    if form.validate_on_submit():
        user = user_service.authenticate(form.email.data or "", form.password.data or "")
        if user is None:
            flash("Wrong email or password.", "error")
        else:
            login_user(user, remember=bool(form.remember.data))
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/users", methods=["GET", "POST"])
@login_required
def users() -> Any:
    if not current_user.is_admin:
        abort(403)
    form = UserForm()
    if form.validate_on_submit():
        try:
            user_service.create_user(
                email=form.email.data or "",
                password=form.password.data or "",
                name=form.name.data or "",
                role=form.role.data or "staff",
            )
        except user_service.UserError as exc:
            flash(str(exc), "error")
        else:
            flash(f"User {form.email.data} created.", "success")
            return redirect(url_for("auth.users"))
    return render_template("auth/users.html", form=form, users=user_service.list_users())

"""API tokens admin (admins only): create a named token with scopes (shown once), revoke, see
when each was last used. /settings/api-tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange
from wtforms.widgets import CheckboxInput, ListWidget

from app.api.auth import SCOPES
from app.auth.permissions import requires
from app.extensions import db
from app.services import api_tokens, audit

bp = Blueprint("api_tokens", __name__, url_prefix="/settings/api-tokens")


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[InputRequired(), Length(max=api_tokens.MAX_NAME)])
    scopes = SelectMultipleField("Scopes", choices=[SelectChoice(k, f"{k}: {v}") for k, v in SCOPES.items()],
                                 option_widget=CheckboxInput(), widget=ListWidget(prefix_label=False))
    rate_per_minute = IntegerField("Calls a minute", default=api_tokens.DEFAULT_RATE, validators=[
        InputRequired(), NumberRange(api_tokens.MIN_RATE, api_tokens.MAX_RATE)])


class RevokeForm(FlaskForm):
    """A button-only form: carries the CSRF token."""


def _page(form: TokenForm, created: api_tokens.NewToken | None = None, status: int = 200) -> Any:
    return render_template("api/tokens.html", form=form, tokens=api_tokens.list_tokens(),
                           revoke_form=RevokeForm(), created=created, scopes=SCOPES), status


@bp.route("", methods=["GET"])
@requires("api_tokens.manage")
def index() -> Any:
    return _page(TokenForm())


@bp.route("", methods=["POST"])
@requires("api_tokens.manage")
def create() -> Any:
    form = TokenForm()
    if not form.validate_on_submit():
        return _page(form, status=400)
    try:
        made = api_tokens.create_token(form.name.data or "", form.scopes.data or [],
                                       rate_per_minute=form.rate_per_minute.data or 0,
                                       created_by=current_user)
    except api_tokens.TokenError as exc:
        db.session.rollback()
        form.name.errors = [*form.name.errors, str(exc)]
        return _page(form, status=400)
    audit.record("api_token.create", made.token.id, f"{made.token.name}: {', '.join(made.token.scopes)}",
                 kind="api_token")
    db.session.commit()
    # The page that shows the token once: it is not kept anywhere, not even in the session, nor
    # in the browser's cache.
    response = make_response(_page(TokenForm(formdata=None), created=made))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/<int:token_id>/revoke", methods=["POST"])
@requires("api_tokens.manage")
def revoke(token_id: int) -> Any:
    form = RevokeForm()
    if not form.validate_on_submit():
        abort(400)
    token = api_tokens.get_token(token_id)
    if token is None:
        abort(404)
    if api_tokens.revoke(token):
        audit.record("api_token.revoke", token.id, token.name, kind="api_token")
        db.session.commit()
        flash(f"Token {token.name} revoked: calls with it are refused from now on.", "success")
    return redirect(url_for("api_tokens.index"))

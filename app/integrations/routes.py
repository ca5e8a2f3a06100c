"""Integrations pages (admins only, "webhooks.manage"): outbound webhook endpoints.

A secret is shown once, on the page that answers its creation (or rotation), and never again.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from app.auth.permissions import requires
from app.extensions import db
from app.inputs import record_id
from app.integrations.forms import ActionForm, EndpointForm, SecretForm
from app.models import WebhookDelivery, WebhookEndpoint
from app.services import outbound

bp = Blueprint("integrations", __name__, url_prefix="/integrations")


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        abort(404)
    return endpoint


def _index(form: EndpointForm | None = None, status: int = 200) -> Any:
    endpoints = list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))
    return render_template(
        "integrations/index.html", endpoints=endpoints, pending=outbound.pending_counts(),
        form=form or EndpointForm(formdata=None), disabled=outbound.disabled_endpoints(),
    ), status


@bp.get("")
@requires("webhooks.manage")
def index() -> Any:
    return _index()


@bp.post("/webhooks")
@requires("webhooks.manage")
def create() -> Any:
    form = EndpointForm()
    if not form.validate_on_submit():
        return _index(form, 400)
    try:
        endpoint = outbound.create_endpoint(
            name=form.name.data or "", url=form.url.data or "",
            event_kinds=list(form.event_kinds.data or []), secret=form.secret.data or None,
            user=current_user)
    except outbound.EndpointError as exc:
        form.url.errors = [*form.url.errors, str(exc)]
        return _index(form, 400)
    db.session.commit()
    return _detail(endpoint, new_secret=endpoint.secret, status=201)


def _detail(endpoint: WebhookEndpoint, *, form: EndpointForm | None = None,
            new_secret: str | None = None, status: int = 200) -> Any:
    before = request.args.get("before", type=record_id)
    log, next_before = outbound.delivery_log(endpoint.id, before_id=before)
    if form is None:
        form = EndpointForm(formdata=None, obj=endpoint)
        form.event_kinds.data = list(endpoint.event_kinds or [])
        form.secret.data = ""  # never sent back to the browser
    response = make_response(render_template(
        "integrations/endpoint.html", endpoint=endpoint, form=form, log=log,
        next_before=next_before, new_secret=new_secret, action_form=ActionForm(),
        secret_form=SecretForm(formdata=None),
        pending=outbound.pending_counts().get(endpoint.id, 0),
    ), status)
    if new_secret:  # shown once: not kept in the browser's cache either
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/webhooks/<int:endpoint_id>")
@requires("webhooks.manage")
def detail(endpoint_id: int) -> Any:
    return _detail(_endpoint(endpoint_id))


@bp.post("/webhooks/<int:endpoint_id>")
@requires("webhooks.manage")
def edit(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    form = EndpointForm()
    if not form.validate_on_submit():
        return _detail(endpoint, form=form, status=400)
    try:
        outbound.update_endpoint(endpoint, name=form.name.data or "", url=form.url.data or "",
                                 event_kinds=list(form.event_kinds.data or []),
                                 active=bool(form.active.data))
    except outbound.EndpointError as exc:
        db.session.rollback()
        form.url.errors = [*form.url.errors, str(exc)]
        return _detail(_endpoint(endpoint_id), form=form, status=400)
    db.session.commit()
    flash("Endpoint saved.", "success")
    return redirect(url_for("integrations.detail", endpoint_id=endpoint.id))


@bp.post("/webhooks/<int:endpoint_id>/secret")
@requires("webhooks.manage")
def rotate(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    form = SecretForm()
    if not form.validate_on_submit():
        flash("A secret you give must be 16 to 128 characters.", "error")
        return redirect(url_for("integrations.detail", endpoint_id=endpoint.id))
    try:
        secret = outbound.rotate_secret(endpoint, form.secret.data or None)
    except outbound.EndpointError as exc:
        flash(str(exc), "error")
        return redirect(url_for("integrations.detail", endpoint_id=endpoint.id))
    db.session.commit()
    return _detail(endpoint, new_secret=secret)


@bp.post("/webhooks/<int:endpoint_id>/enable")
@requires("webhooks.manage")
def enable(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    outbound.enable_endpoint(endpoint)
    db.session.commit()
    flash("Endpoint enabled: its pending deliveries go out now.", "success")
    return redirect(url_for("integrations.detail", endpoint_id=endpoint.id))


@bp.post("/webhooks/<int:endpoint_id>/delete")
@requires("webhooks.manage")
def delete(endpoint_id: int) -> Any:
    endpoint = _endpoint(endpoint_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    outbound.delete_endpoint(endpoint)
    db.session.commit()
    flash("Endpoint deleted, with its delivery log.", "success")
    return redirect(url_for("integrations.index"))


@bp.post("/deliveries/<int:delivery_id>/send-again")
@requires("webhooks.manage")
def send_again(delivery_id: int) -> Any:
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    outbound.send_again(delivery)
    db.session.commit()
    flash(f"Delivery {delivery.id} queued to be sent again.", "success")
    return redirect(url_for("integrations.detail", endpoint_id=delivery.endpoint_id))

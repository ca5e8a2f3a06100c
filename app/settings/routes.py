"""Settings pages (admins only): sending settings, SMTP providers, email types, webhook secrets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from app.auth.permissions import requires
from app.extensions import db
from app.models import EmailType, Provider
from app.services import audit
from app.services import dkim as dkim_service
from app.services import providers as provider_service
from app.services import settings as settings_service
from app.settings.forms import ActionForm, DkimForm, EmailTypeForm, ProviderForm

bp = Blueprint("settings", __name__, url_prefix="/settings")

# Webhook secrets come from the environment; the page shows their names, never their values.
KNOWN_SECRET_NAMES = ("GENERIC_WEBHOOK_SECRET", "SENDGRID_WEBHOOK_PUBLIC_KEY",
                      "MAILGUN_WEBHOOK_SIGNING_KEY", "SENDBOARD_WEBHOOK_BASIC_USER",
                      "SENDBOARD_WEBHOOK_BASIC_PASSWORD")



def webhook_secret_names() -> list[tuple[str, bool]]:
    """(name, is set) for every webhook secret the deployment knows of."""
    names: set[str] = set(KNOWN_SECRET_NAMES)
    try:
        from app.webhooks import routes as webhooks

        names.update(getattr(webhooks, "SECRET_NAMES", ()))
    except ImportError:
        pass
    names.update(k for k in os.environ if "WEBHOOK" in k.upper())
    names.update(k for k in current_app.config if "WEBHOOK" in str(k).upper())
    return sorted((n, bool(os.environ.get(n) or current_app.config.get(n))) for n in names)


def _providers() -> list[Provider]:
    return provider_service.all_providers()


@dataclass(frozen=True)
class SendRate:
    """A provider's sending rate as the workers see it (app/providers/rate.py): the configured
    messages per second (0: no limit), the current one (lower after a slow-down reply, growing
    back step by step) and when the server last asked to slow down, while that cut lasts."""

    configured: float
    current: float | None  # None: Redis could not be read
    slowed_at: datetime | None


def send_rates(providers: list[Provider]) -> dict[int | None, SendRate]:
    """The send rate of every provider by id; key None is the environment's server (or the local
    capture server) when no provider is configured."""
    from redis.exceptions import RedisError

    from app.providers import rate
    from app.redis_conn import get_redis

    fallback = float(settings_service.get("rate_per_second") or 0)
    keys: dict[int | None, tuple[str, float]] = {
        p.id: (f"provider:{p.id}", float(p.rate_per_second or fallback)) for p in providers}
    if not providers:
        _, key, limit = rate.provider_settings()
        keys[None] = (key, float(limit or 0))
    rates: dict[int | None, SendRate] = {}
    try:
        redis = get_redis()
        for pid, (key, limit) in keys.items():
            cut = rate.read_cut(redis, key)
            current = rate.current_rate(redis, key, limit)
            # current_rate forgets a cut once the rate has grown back: read it again.
            cut = rate.read_cut(redis, key) if cut is not None else None
            at = datetime.fromtimestamp(cut.at, UTC).replace(tzinfo=None) if cut else None
            rates[pid] = SendRate(limit, current, at)
    except (RedisError, RuntimeError, OSError):
        rates = {pid: SendRate(limit, None, None) for pid, (_, limit) in keys.items()}
    return rates


def _render(**extra: Any) -> Any:
    values = settings_service.all_values()
    provider_form = extra.pop("provider_form", None) or ProviderForm(formdata=None)
    type_form = extra.pop("type_form", None) or EmailTypeForm(formdata=None)
    dkim_form = extra.pop("dkim_form", None) or DkimForm(
        formdata=None, selector=dkim_service.suggested_selector(date.today()))
    dkim_form.private_key.data = ""  # a private key is never sent back to the browser
    providers = _providers()
    return render_template(
        "settings/index.html", specs=settings_service.SPECS.values(),
        values={**values, **extra.pop("entered", {})}, errors=extra.pop("errors", {}),
        providers=providers, send_rates=send_rates(providers),
        email_types=provider_service.email_types(),
        provider_form=provider_form, type_form=type_form, action_form=ActionForm(),
        dkim_form=dkim_form, dkim_keys=[(key, dkim_service.record_for(key))
                                        for key in dkim_service.list_keys()],
        secrets=webhook_secret_names(), **extra,
    )


@bp.route("", methods=["GET"])
@requires("settings.read")
def index() -> Any:
    return _render()


@bp.route("", methods=["POST"])
@requires("settings.edit")
def save() -> Any:
    """Validate every setting first; store them only if all are valid."""
    if not ActionForm().validate_on_submit():
        abort(400)
    entered = {key: request.form.get(key, "") for key in settings_service.SPECS}
    _, errors = settings_service.parse_all(entered)
    if errors:
        for message in errors.values():
            flash(message, "error")
        return _render(entered=entered, errors=errors), 422
    settings_service.set_many(entered)
    audit.record("settings.save", None, ", ".join(sorted(entered))[:500], kind="settings")
    db.session.commit()
    flash("Settings saved.", "success")
    return redirect(url_for("settings.index"))


def _provider_values(form: ProviderForm) -> provider_service.ProviderValues:
    return provider_service.ProviderValues(
        name=form.name.data or "", kind=form.kind.data or "smtp", host=form.host.data or "",
        port=int(form.port.data or 25), security=form.security.data or "none",
        username=form.username.data or "",
        password=form.password.data or None,  # blank keeps the stored password
        rate_per_second=float(form.rate_per_second.data or 0),
        # blank keeps what it has (4 for a new one)
        connections=int(form.connections.data) if form.connections.data is not None else None,
        reports_events=bool(form.reports_events.data), is_default=bool(form.is_default.data))


def _save_provider(provider: Provider, form: ProviderForm, done: str) -> Any:
    try:
        provider_service.save_provider(provider, _provider_values(form))
    except provider_service.ProviderError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return None
    audit.record("provider.add" if request.endpoint == "settings.add_provider"
                 else "provider.edit", provider, provider.name)
    db.session.commit()
    flash(done, "success")
    return redirect(url_for("settings.index") + "#providers")


@bp.route("/providers", methods=["POST"])
@requires("settings.edit")
def add_provider() -> Any:
    form = ProviderForm()
    if form.validate_on_submit():
        done = _save_provider(Provider(), form, f"Provider {form.name.data} added.")
        if done is not None:
            return done
    else:
        for errors in form.errors.values():
            for error in errors:
                flash(f"Provider not saved: {error}", "error")
    return _render(provider_form=form), 422


@bp.route("/providers/<int:provider_id>", methods=["GET", "POST"])
@requires("settings.edit")
def edit_provider(provider_id: int) -> Any:
    provider = provider_service.get_provider(provider_id)
    if provider is None:
        abort(404)
    form = ProviderForm(obj=provider if request.method == "GET" else None)
    if request.method == "GET":
        form.password.data = ""
    if form.validate_on_submit():
        done = _save_provider(provider, form, f"Provider {form.name.data} saved.")
        if done is not None:
            return done
    status = 422 if request.method == "POST" else 200
    return render_template("settings/provider.html", form=form, provider=provider), status


@bp.route("/providers/<int:provider_id>/default", methods=["POST"])
@requires("settings.edit")
def make_default(provider_id: int) -> Any:
    provider = provider_service.get_provider(provider_id)
    if provider is None:
        abort(404)
    if ActionForm().validate_on_submit():
        provider_service.make_default(provider)
        audit.record("provider.default", provider, provider.name)
        db.session.commit()
        flash(f"Mail is now sent through {provider.name}.", "success")
    return redirect(url_for("settings.index") + "#providers")


@bp.route("/email-types", methods=["POST"])
@requires("settings.edit")
def add_email_type() -> Any:
    form = EmailTypeForm()
    if form.validate_on_submit():
        try:
            provider_service.add_email_type(form.name.data or "", form.description.data or "",
                                            transactional=bool(form.transactional.data))
        except provider_service.ProviderError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            audit.record("email_type.add", None, form.name.data or "", kind="email_type")
            db.session.commit()
            flash(f"Email type {form.name.data} added.", "success")
            return redirect(url_for("settings.index") + "#email-types")
    else:
        for errors in form.errors.values():
            for error in errors:
                flash(f"Email type not added: {error}", "error")
    return _render(type_form=form), 422


@bp.route("/email-types/<int:type_id>/transactional", methods=["POST"])
@requires("settings.edit")
def set_transactional(type_id: int) -> Any:
    """Mark an email type transactional (form value transactional=1) or not: a transactional type
    reaches contacts who left email types and inactive ones; only do-not-email stops it."""
    from app.inputs import MAX_ID

    if not ActionForm().validate_on_submit():
        abort(400)
    email_type = db.session.get(EmailType, type_id) if 0 < type_id < MAX_ID else None
    if email_type is None:
        abort(404)
    email_type.transactional = request.form.get("transactional") == "1"
    state = "transactional" if email_type.transactional else "not transactional"
    audit.record("email_type.transactional", email_type, state, kind="email_type")
    db.session.commit()
    flash(f"Email type {email_type.name} is {state} now.", "success")
    return redirect(url_for("settings.index") + "#email-types")


def _dkim_done(key: Any, verb: str) -> Any:
    record = dkim_service.record_for(key)
    audit.record(f"dkim.{'generate' if verb == 'generated' else 'upload'}", key,
                 f"{key.selector}._domainkey.{key.domain}")
    db.session.commit()
    flash(f"DKIM key for {key.domain} {verb}. Publish the TXT record {record.name} shown below; "
          "mail from the domain is signed from the next batch on.", "success")
    return redirect(url_for("settings.index") + "#dkim")


def _dkim_refused(form: DkimForm, message: str) -> Any:
    flash(f"DKIM key not saved: {message}", "error")
    return _render(dkim_form=form, dkim_error=message), 422


@bp.route("/dkim/generate", methods=["POST"])
@requires("settings.edit")
def generate_dkim() -> Any:
    form = DkimForm()
    if not form.validate_on_submit():
        return _dkim_refused(form, "; ".join(e for errors in form.errors.values() for e in errors))
    try:
        key = dkim_service.generate(form.domain.data or "", form.selector.data or "")
    except dkim_service.DkimError as exc:
        db.session.rollback()
        return _dkim_refused(form, str(exc))
    return _dkim_done(key, "generated")


@bp.route("/dkim/upload", methods=["POST"])
@requires("settings.edit")
def upload_dkim() -> Any:
    form = DkimForm()
    if not form.validate_on_submit():
        return _dkim_refused(form, "; ".join(e for errors in form.errors.values() for e in errors))
    pem: str | bytes = form.private_key.data or ""
    upload = request.files.get("key_file")
    if not pem.strip() and upload is not None and upload.filename:
        pem = upload.read(dkim_service.MAX_PEM_CHARS + 1)
    try:
        key = dkim_service.upload(form.domain.data or "", form.selector.data or "", pem)
    except dkim_service.DkimError as exc:
        db.session.rollback()
        return _dkim_refused(form, str(exc))
    return _dkim_done(key, "uploaded")


@bp.route("/dkim/<int:key_id>/delete", methods=["POST"])
@requires("settings.edit")
def delete_dkim(key_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        abort(400)
    domain = dkim_service.delete(key_id)
    if domain is None:
        abort(404)
    audit.record("dkim.delete", key_id, domain, kind="dkim_key")
    db.session.commit()
    flash(f"DKIM key for {domain} deleted: its mail goes out unsigned from the next batch on. "
          "Remove the TXT record once no mail signed with it is still on its way.", "success")
    return redirect(url_for("settings.index") + "#dkim")


from app.settings import zone_routes as _zone_routes  # noqa: E402,F401 - the organisation's zone

"""Sendboard: self-hosted bulk email campaigns."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, g, redirect, request, url_for
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.routing import IntegerConverter

from app.config import Config, check_config
from app.extensions import csrf, db, login_manager, migrate
from app.inputs import MAX_ID

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")
JSON_BLUEPRINTS = frozenset({"webhooks", "api"})
class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` in every route, refusing numbers no row can have."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", MAX_ID - 1)
        super().__init__(map, *args, **kwargs)


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    """Build the Flask application; `config` is a Config object or a dict of overrides."""
    app = Flask(__name__, instance_relative_config=False)
    # Ids in URLs fit the database's 64-bit integers: a larger one is a 404, not an overflow.
    app.url_map.converters["int"] = BoundedIntConverter
    base = config if isinstance(config, Config) else Config()
    app.config.from_object(base)
    if isinstance(config, dict):
        app.config.update(config)
    check_config(app.config)
    Path(app.config["INSTANCE_DIR"]).mkdir(parents=True, exist_ok=True)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"

    from app import models

    @login_manager.user_loader
    def load_user(user_id: str) -> models.User | None:
        """Session and remember cookies hold "<id>:<stamp>"; a changed stamp signs nobody in."""
        raw_id, _, stamp = user_id.partition(":")
        if not raw_id.isdigit() or not stamp or len(raw_id) > 18:
            return None
        user = db.session.get(models.User, int(raw_id))
        if user is None or not user.active or not secrets.compare_digest(
                user.session_stamp.encode(), stamp.encode()):
            return None
        return user

    @app.before_request
    def _forms_only_on_staff_pages() -> Any:
        """Staff pages take forms; a JSON body there (which form parsing would read as the form
        and choke on when it is not an object) is refused. Webhooks and the API read JSON."""
        if (request.is_json and request.blueprint not in JSON_BLUEPRINTS
                and not request.path.startswith("/api/")):
            return {"error": "this page takes a form, not JSON"}, 415
        return None

    @app.before_request
    def _decide_the_user_afresh() -> None:
        """Every request loads its user again (never one kept from an earlier request in the same
        app context), so a session ended a moment ago is refused on the very next request."""
        g.pop("_login_user", None)

    _register_blueprints(app)

    from app.cli import register_cli

    register_cli(app)

    @app.route("/")
    def index() -> Any:
        return redirect(url_for("main.home"))

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if app.config.get("ENV") == "production":
            response.headers.setdefault("Strict-Transport-Security",
                                        "max-age=31536000; includeSubDomains")
        return response

    _register_error_pages(app)

    from app.templating import register_templating

    register_templating(app)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


# Scripts only from the app's own files: no inline script, no eval (see README, Security
# headers). style-src also allows inline styles: Plotly sets the size and position of every chart
# element with style attributes, the progress bars carry their width, and mailings carry their own
# <style> blocks. Mail previews are sandboxed srcdoc frames, which inherit this policy: their images
# may come from anywhere (as in the recipient's mail program), and a link clicked in one opens in
# its frame, so frames may load http(s) pages; scripts stay off there (sandbox).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; font-src 'self'; connect-src 'self'; "
    "frame-src 'self' https: http:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

ERROR_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found",
                405: "Not allowed here", 413: "Too large", 429: "Too many attempts",
                500: "Something went wrong"}


def _register_error_pages(app: Flask) -> None:
    """Styled error pages; a failed request's database work is rolled back."""
    from flask import render_template
    from werkzeug.exceptions import HTTPException, InternalServerError

    from app.api import is_api_path
    from app.api.problems import from_http_exception

    @app.errorhandler(HTTPException)
    def api_errors(error: HTTPException) -> Any:
        """Under /api/v1 every error is problem+json (RFC 9457); elsewhere werkzeug's own page."""
        return from_http_exception(error) if is_api_path(request.path) else error

    def render(code: int, message: str) -> Any:
        title = ERROR_TITLES.get(code, "Error")
        return render_template("errors/error.html", code=code, title=title,
                               message=message), code

    @app.errorhandler(403)
    def forbidden(error: HTTPException) -> Any:
        if is_api_path(request.path):
            return from_http_exception(error)
        message = error.description
        if not message or message == type(error).description:
            message = "Your account may not do this; ask an admin."
        return render(403, message)

    @app.errorhandler(404)
    def not_found(error: HTTPException) -> Any:
        if is_api_path(request.path):
            return from_http_exception(error)
        return render(404, "There is nothing at this address: it may have been deleted, or the "
                           "link is mistyped.")

    @app.errorhandler(500)
    def server_error(error: InternalServerError) -> Any:
        db.session.rollback()
        if is_api_path(request.path):
            return from_http_exception(error)
        return render(500, "The request failed and nothing was saved. Try again; if it keeps "
                           "failing, the server log says why.")


def _register_blueprints(app: Flask) -> None:
    """Every area's pages, named here: a new area imports its blueprint and adds it to the list."""
    from app.auth.routes import bp as auth
    from app.capture.routes import bp as capture
    from app.contacts.routes import bp as contacts
    from app.integrations.routes import bp as integrations
    from app.mailings.routes import bp as mailings
    from app.main.routes import bp as main
    from app.settings.routes import bp as settings
    from app.tracking.routes import bp as tracking
    from app.webhooks.routes import bp as webhooks

    for blueprint in (auth, main, contacts, mailings, tracking, webhooks, settings, capture,
                      integrations):
        app.register_blueprint(blueprint)
    from app.api.routes import register_api

    register_api(app)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """WAL lets the dashboard read while workers write; foreign keys enforce cascades."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()

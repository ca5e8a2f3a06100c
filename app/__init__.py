"""Sendboard: self-hosted bulk email campaigns."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, redirect, url_for
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.config import Config, check_config
from app.extensions import csrf, db, login_manager, migrate

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    """Build the Flask application; `config` is a Config object or a dict of overrides."""
    app = Flask(__name__, instance_relative_config=False)
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
        return db.session.get(models.User, int(user_id))

    from app.auth.routes import bp as auth_bp
    from app.main.routes import bp as main_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(main_bp)
    _register_optional_blueprints(app)

    from app.cli import register_cli

    register_cli(app)

    @app.route("/")
    def index() -> Any:
        return redirect(url_for("main.home"))

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def _register_optional_blueprints(app: Flask) -> None:
    """Blueprints of the other areas; each package registers itself if present."""
    import importlib

    for area in ("contacts", "mailings", "tracking", "webhooks", "settings", "capture"):
        try:
            module = importlib.import_module(f"app.{area}.routes")
        except ModuleNotFoundError as exc:
            if exc.name in {f"app.{area}", f"app.{area}.routes"}:
                continue
            raise
        app.register_blueprint(module.bp)


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

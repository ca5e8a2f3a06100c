"""The roles migration: staff users become editors, each user gets a session stamp of their own,
and the downgrade gives the staff role back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app import config as app_config
from app import create_app
from app.extensions import db

BEFORE = "3b7c9e2f4d10"
ROLES = "a41c7e9d2b63"


def test_staff_become_editors_with_their_own_stamps(tmp_path: Path) -> None:
    import flask_migrate

    config = app_config.TestConfig(str(tmp_path))
    config.SQLALCHEMY_DATABASE_URI = f"sqlite:///{tmp_path / 'roles.db'}"
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade(revision=BEFORE)
        for email, role in (("a@example.org", "staff"), ("b@example.org", "staff"),
                            ("c@example.org", "admin")):
            db.session.execute(text(
                "INSERT INTO users (email, name, password_hash, role, active, created_at) "
                "VALUES (:e, '', 'x', :r, 1, '2026-01-01 00:00:00')"), {"e": email, "r": role})
        db.session.commit()
        flask_migrate.upgrade(revision=ROLES)
        rows = db.session.execute(text(
            "SELECT email, role, session_stamp FROM users ORDER BY email")).all()
        assert [(e, r) for e, r, _ in rows] == [("a@example.org", "editor"),
                                                ("b@example.org", "editor"),
                                                ("c@example.org", "admin")]
        stamps = [s for _, _, s in rows]
        assert all(len(s) == 16 for s in stamps) and len(set(stamps)) == 3
        flask_migrate.downgrade(revision=BEFORE)
        assert db.session.execute(text("SELECT role FROM users ORDER BY email")).scalars().all() \
            == ["staff", "staff", "admin"]
        db.session.remove()
        db.engine.dispose()

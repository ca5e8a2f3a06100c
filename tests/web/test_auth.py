from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

# Recipient-facing endpoints and assets that must work without a staff login; the API answers
# bearer tokens, not sessions (tests/api).
PUBLIC_PREFIXES = ("/login", "/static/", "/t/", "/u/", "/webhooks/", "/api/v1/")


def _staff_urls(app: Flask) -> list[tuple[str, str]]:
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PUBLIC_PREFIXES) or rule.endpoint == "index":
            continue
        values = {arg: 1 for arg in rule.arguments}
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", "1")
            for conv in ("int", "string", "path"):
                path = path.replace(f"<{conv}:{arg}>", "1")
        del values
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            urls.append((method, path))
    return urls


def test_every_staff_url_requires_login(app: Flask, client: FlaskClient) -> None:
    urls = _staff_urls(app)
    assert ("GET", "/home") in urls
    for method, path in urls:
        response = client.open(path, method=method)
        assert response.status_code == 302, (method, path, response.status_code)
        assert response.headers["Location"].startswith("/login"), (method, path)


def test_login_and_logout(auth, client: FlaskClient):
    auth.login()
    assert client.get("/home").status_code == 200
    auth.logout()
    assert client.get("/home").status_code == 302


def test_wrong_password_is_refused(auth, client: FlaskClient):
    auth.create()
    response = client.post("/login", data={"email": "staff@example.org", "password": "nope"})
    assert response.status_code == 200
    assert b"Wrong email or password" in response.data
    assert client.get("/home").status_code == 302


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/home", "/home"),
        ("https://evil.example/", "/home"),
        ("//evil.example/", "/home"),
        ("/\\evil.example", "/home"),
        ("javascript:alert(1)", "/home"),
    ],
)
def test_login_never_redirects_off_site(auth, client, target, expected):
    auth.create()
    response = client.post(
        "/login", query_string={"next": target},
        data={"email": "staff@example.org", "password": "correct horse"},
    )
    assert response.headers["Location"] == expected


def test_only_admins_manage_users(auth, client: FlaskClient):
    auth.login()
    assert client.get("/users").status_code == 403
    auth.logout()
    auth.login("boss@example.org", role="admin")
    response = client.post(
        "/users", data={"email": "new@example.org", "password": "longenough", "role": "editor"}
    )
    assert response.status_code == 302
    from app.services.users import authenticate

    created = authenticate("new@example.org", "longenough")
    assert created is not None and created.role == "editor"

    # A local install's own domain is an address too; a malformed one is refused with the reason.
    response = client.post(
        "/users", data={"email": "ana@sendboard.local", "password": "longenough", "role": "viewer"}
    )
    assert response.status_code == 302 and authenticate("ana@sendboard.local", "longenough")
    response = client.post("/users", data={"email": "ana@", "password": "longenough",
                                           "role": "viewer"})
    assert response.status_code != 302 and b"not an email address" in response.data


def test_csrf_is_enforced_on_forms(tmp_path):
    from app import create_app
    from app.config import TestConfig
    from app.extensions import db

    config = TestConfig(str(tmp_path))
    config.WTF_CSRF_ENABLED = True
    app = create_app(config)
    with app.app_context():
        db.create_all()
        from app.services.users import create_user

        create_user(email="staff@example.org", password="correct horse")
        client = app.test_client()
        response = client.post(
            "/login", data={"email": "staff@example.org", "password": "correct horse"}
        )
        assert response.status_code == 400
        db.engine.dispose()


def test_production_refuses_default_secret(monkeypatch, tmp_path):
    from app import create_app

    monkeypatch.setenv("SENDBOARD_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("SENDBOARD_INSTANCE", str(tmp_path))
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app()

"""Sign-in and sessions: throttling, the same answer for unknown addresses, sessions that end,
and the security headers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from app.extensions import db
from app.models import AuditEntry, LoginThrottle, User
from app.services import throttle
from app.services import users as user_service

PASSWORD = "correct horse"


def _login(client, email: str, password: str = PASSWORD, remember: bool = False, ip: str = "10.0.0.1"):
    data = {"email": email, "password": password}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data, environ_base={"REMOTE_ADDR": ip})


def _body(response) -> str:
    """The page without the echoed address, to compare two answers."""
    return re.sub(r'value="[^"]*@[^"]*"', "", response.get_data(as_text=True))


# ---------------------------------------------------------------- the same answer


def test_unknown_and_known_addresses_get_the_same_answer(auth, client) -> None:
    auth.create("known@example.org")
    known = _login(client, "known@example.org", "wrong password")
    unknown = _login(client, "nobody@example.org", "wrong password")
    assert known.status_code == unknown.status_code == 200
    assert "Wrong email or password." in known.get_data(as_text=True)
    assert _body(known) == _body(unknown)


def test_the_password_hash_runs_for_unknown_addresses_too(auth, client, monkeypatch) -> None:
    auth.create("known@example.org")
    calls: list[str] = []
    real = user_service.check_password_hash

    def counting(pwhash: str, password: str) -> bool:
        calls.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(user_service, "check_password_hash", counting)
    _login(client, "known@example.org", "wrong password", ip="10.0.0.2")
    _login(client, "nobody@example.org", "wrong password", ip="10.0.0.3")
    assert len(calls) == 2
    # The dummy hash uses the same method as real ones, so it costs as much.
    assert calls[0] == calls[1]


def test_a_deactivated_user_is_refused_like_a_wrong_password(auth, client) -> None:
    auth.create("gone@example.org")
    user_service.set_active(user_service.find_user("gone@example.org"), False)
    refused = _login(client, "gone@example.org")
    assert refused.status_code == 200 and "Wrong email or password." in refused.get_data(as_text=True)


# ---------------------------------------------------------------- throttling


def test_five_failures_lock_the_address_even_for_the_right_password(auth, client) -> None:
    auth.create("known@example.org")
    for i in range(throttle.MAX_FAILURES):
        assert _login(client, "known@example.org", f"guess {i}", ip=f"10.1.0.{i}").status_code == 200
    locked = _login(client, "known@example.org", PASSWORD, ip="10.1.1.1")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.get_data(as_text=True)
    assert "/home" not in locked.headers.get("Location", "")


def test_an_unknown_address_is_locked_the_same_way(client) -> None:
    for i in range(throttle.MAX_FAILURES):
        _login(client, "nobody@example.org", f"guess {i}", ip=f"10.2.0.{i}")
    locked = _login(client, "nobody@example.org", "anything", ip="10.2.1.1")
    assert locked.status_code == 429


def test_one_client_address_trying_many_addresses_is_locked(auth, client) -> None:
    auth.create("known@example.org")
    for i in range(throttle.MAX_FAILURES):
        _login(client, f"user{i}@example.org", "guess", ip="10.3.0.9")
    assert _login(client, "known@example.org", PASSWORD, ip="10.3.0.9").status_code == 429
    # Another client address still signs in.
    assert _login(client, "known@example.org", PASSWORD, ip="10.3.0.10").status_code == 302


def test_lockouts_grow_and_end(app: Flask) -> None:
    from datetime import timedelta

    from app.models import utcnow

    keys = ["email:a@example.org"]
    now = utcnow()
    for _ in range(throttle.MAX_FAILURES):
        throttle.fail(keys, now)
    first = throttle.locked_until(keys, now)
    assert first == now + throttle.FIRST_LOCK
    assert throttle.locked_until(keys, first + timedelta(seconds=1)) is None
    later = first + timedelta(seconds=1)
    for _ in range(throttle.MAX_FAILURES):
        throttle.fail(keys, later)
    assert throttle.locked_until(keys, later) == later + 2 * throttle.FIRST_LOCK
    row = db.session.get(LoginThrottle, keys[0])
    assert row.lockouts == 2


def test_a_success_clears_the_address_count(auth, client) -> None:
    auth.create("known@example.org")
    for i in range(throttle.MAX_FAILURES - 1):
        _login(client, "known@example.org", "guess", ip=f"10.4.0.{i}")
    assert _login(client, "known@example.org", ip="10.4.1.1").status_code == 302
    assert db.session.get(LoginThrottle, "email:known@example.org") is None


def test_sign_ins_and_failures_are_audited(auth, client) -> None:
    auth.create("known@example.org")
    _login(client, "nobody@example.org", "guess", ip="10.5.0.1")
    _login(client, "known@example.org", ip="10.5.0.2")
    client.post("/logout", environ_base={"REMOTE_ADDR": "10.5.0.3"})
    rows = [(e.action, e.user_email, e.ip) for e in
            db.session.query(AuditEntry).order_by(AuditEntry.id)]
    assert rows == [("login.failed", "nobody@example.org", "10.5.0.1"),
                    ("login", "known@example.org", "10.5.0.2"),
                    ("logout", "known@example.org", "10.5.0.3")]


# ---------------------------------------------------------------- sessions end


def test_a_session_cookie_copied_before_sign_out_does_not_work_after(app: Flask, auth,
                                                                   client) -> None:
    auth.login()
    copied = client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/home").status_code == 200
    client.post("/logout")
    response = thief.get("/home")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_remember_cookie_does_not_work_after_a_password_change(app: Flask, auth,
                                                               client) -> None:
    auth.create()
    assert _login(client, "staff@example.org", remember=True).status_code == 302
    token = client.get_cookie("remember_token").value
    fresh = app.test_client()
    fresh.set_cookie("remember_token", token)
    assert fresh.get("/home").status_code == 200  # the cookie alone signs in
    user_service.set_password(user_service.find_user("staff@example.org"), "a new password")
    again = app.test_client()
    again.set_cookie("remember_token", token)
    response = again.get("/home")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_deactivation_ends_a_live_session(auth, client) -> None:
    auth.login()
    assert client.get("/home").status_code == 200
    user_service.set_active(user_service.find_user("staff@example.org"), False)
    response = client.get("/home")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_role_change_ends_the_session(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    auth.create("second@example.org", role="admin")
    user_service.update_user(user_service.find_user("boss@example.org"), name="", role="viewer")
    assert client.get("/home").status_code == 302


def test_old_style_session_ids_sign_nobody_in(app: Flask, auth, client) -> None:
    auth.create()
    user = user_service.find_user("staff@example.org")
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)  # an id without its stamp
        session["_fresh"] = True
    assert client.get("/home").status_code == 302
    for bad in (f"{user.id}:", f"{user.id}:nottheStamp", "x:y", ":", "9" * 40 + ":a"):
        with client.session_transaction() as session:
            session["_user_id"] = bad
        assert client.get("/home").status_code == 302, bad


def test_the_cookie_holds_the_stamp_not_just_the_id(auth) -> None:
    auth.create()
    user = db.session.query(User).one()
    assert user.get_id() == f"{user.id}:{user.session_stamp}" and len(user.session_stamp) == 16


# ---------------------------------------------------------------- headers


def test_security_headers(client) -> None:
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'self'"
    assert "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers


def test_hsts_only_in_production(tmp_path: Path) -> None:
    from app import create_app
    from app.config import TestConfig

    config = TestConfig(str(tmp_path))
    config.ENV = "production"
    config.SECRET_KEY = "a-long-random-production-key-for-this-test-only"
    app = create_app(config)
    response = app.test_client().get("/login")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


TEMPLATES = Path(__file__).resolve().parents[2] / "app" / "templates"


@pytest.mark.parametrize("path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: p.name)
def test_no_inline_script_in_templates(path: Path) -> None:
    text = path.read_text()
    inline = [m for m in re.finditer(r"<script(?P<attrs>[^>]*)>", text)
              if "src=" not in m.group("attrs") and "application/json" not in m.group("attrs")]
    assert inline == []
    assert re.findall(r"\son[a-z]+\s*=", text) == []
    assert "hx-on" not in text and "javascript:" not in text


def test_deactivating_from_the_list_returns_to_the_list_whatever_the_referrer(auth, client) -> None:
    auth.login("admin@example.org", role="admin")
    auth.create("other@example.org")
    other = db.session.scalar(db.select(User).where(User.email == "other@example.org"))
    assert other is not None
    response = client.post(f"/users/{other.id}/active", data={"active": "0", "next": "list"},
                           headers={"Referer": "https://evil.example/"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/users"
    db.session.expire_all()
    assert db.session.get(User, other.id).active is False

"""The audit log and the users admin: who did what, each mailing's history, the /audit page with
its filters and paging; editing, resetting, deactivating users, and the last admin kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from app.extensions import db
from app.models import AuditEntry, Mailing, User
from app.services import audit, mailings
from app.services import users as user_service


def _draft(name: str = "Spring news") -> Mailing:
    return mailings.create(owner_id=None, name=name, subject="Hi", from_address="news@example.org",
                           html_body="<p>Hi</p>", text_body="Hi")


def _entries(kind: str | None = None) -> list[tuple[str, str, str, str]]:
    rows = db.session.query(AuditEntry).order_by(AuditEntry.id)
    return [(e.action, e.user_email, e.target_kind, e.target_id) for e in rows
            if kind is None or e.target_kind == kind]


def test_mailing_actions_are_recorded_with_who_and_what(auth, client) -> None:
    auth.login("ana@example.org", role="editor")
    mailing = _draft()
    mailing_id = str(mailing.id)
    mailing.status, mailing.send_at = "scheduled", datetime.now(UTC) + timedelta(days=2)
    db.session.commit()
    assert client.post(f"/mailings/{mailing.id}/unschedule").status_code == 302
    assert client.post(f"/mailings/{mailing.id}/copy").status_code == 302
    clone = db.session.query(Mailing).filter(Mailing.copied_from_id == mailing.id).one()
    assert client.post(f"/mailings/{clone.id}/delete").status_code == 302
    assert _entries("mailing") == [
        ("mailing.unschedule", "ana@example.org", "mailing", mailing_id),
        ("mailing.copy", "ana@example.org", "mailing", mailing_id),
        ("mailing.delete", "ana@example.org", "mailing", str(clone.id)),
    ]
    copy_entry = db.session.query(AuditEntry).filter_by(action="mailing.copy").one()
    assert copy_entry.detail == f"copied into mailing {clone.id}"


def test_the_mailing_page_shows_its_own_history(auth, client) -> None:
    auth.login("ana@example.org", role="editor")
    mailing = _draft()
    other = _draft("Other")
    ana = user_service.find_user("ana@example.org")
    audit.record("mailing.cancel", mailing, "now canceled", user=ana)
    audit.record("mailing.resume", other, user=ana)
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    history = page.split('id="history"', 1)[1]
    assert re.search(r"Canceled by ana@example\.org at \d{4}-\d\d-\d\d \d\d:\d\d UTC", history)
    assert "Resumed" not in history


def test_a_failed_action_records_nothing(auth, client) -> None:
    auth.login("ana@example.org", role="editor")
    mailing = _draft()
    client.post(f"/mailings/{mailing.id}/resume")  # a draft cannot resume
    assert _entries("mailing") == []


def test_contact_flag_changes_are_recorded(auth, client) -> None:
    from app.models import Contact

    auth.login("ana@example.org", role="editor")
    contact = Contact(email="bob@example.org", email_key="bob@example.org")
    db.session.add(contact)
    db.session.commit()
    client.post(f"/contacts/{contact.id}/do-not-email", data={"reason": "asked by phone"})
    client.post(f"/contacts/{contact.id}/allow-email")
    assert _entries("contact") == [
        ("contact.do_not_email", "ana@example.org", "contact", str(contact.id)),
        ("contact.allow_email", "ana@example.org", "contact", str(contact.id)),
    ]


def test_settings_changes_are_recorded(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    client.post("/settings/email-types", data={"name": "Alerts", "description": ""})
    assert [a for a, *_ in _entries()][-1] == "email_type.add"


def test_the_audit_page_filters_and_pages(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    ana = user_service.create_user(email="ana@example.org", password="correct horse")
    for i in range(60):
        audit.record("mailing.send", i + 1, kind="mailing", user=ana)
    audit.record("settings.save", None, "quota", kind="settings")
    first = client.get(f"/audit?user={ana.id}").get_data(as_text=True)
    assert first.count("<code>mailing.send</code>") == 50
    assert "settings.save" not in first.split('id="audit"', 1)[1]
    more = re.search(r'href="([^"]*before=\d+[^"]*)" rel="next"', first)
    assert more is not None
    second = client.get(more.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert second.count("<code>mailing.send</code>") == 10 and 'rel="next"' not in second
    ids = re.findall(r'mailing (\d+)</a>', first + second)
    assert sorted(map(int, ids)) == list(range(1, 61))
    only = client.get("/audit?action=settings.save").get_data(as_text=True)
    assert only.count("<code>settings.save</code>") == 1 and "<code>mailing.send</code>" not in only
    by_kind = client.get("/audit?kind=settings").get_data(as_text=True)
    assert by_kind.count("<code>settings.save</code>") == 1
    today = datetime.now(UTC).date()
    past = client.get(f"/audit?until={today - timedelta(days=1)}").get_data(as_text=True)
    assert "Nothing recorded matches these filters" in past
    assert client.get(f"/audit?since={today}&until={today}").get_data(as_text=True).count(
        "<code>") == 50
    for junk in ("?user=abc", "?before=-1", "?since=2026-13-45", "?action=<x>", "?kind=%00",
                 "?before=" + "9" * 40):
        assert client.get("/audit" + junk).status_code == 200, junk


def test_only_admins_see_the_audit_log(auth, client) -> None:
    auth.login("ana@example.org", role="editor")
    assert client.get("/audit").status_code == 403


# ---------------------------------------------------------------- users admin


def test_admin_edits_name_and_role(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    user = user_service.create_user(email="ana@example.org", password="correct horse")
    response = client.post(f"/users/{user.id}", data={"name": "Ana", "role": "viewer"})
    assert response.status_code == 302
    db.session.expire_all()
    user = db.session.get(User, user.id)
    assert (user.name, user.role) == ("Ana", "viewer")
    entry = db.session.query(AuditEntry).filter_by(action="user.edit").one()
    assert entry.user_email == "boss@example.org" and "editor → viewer" in entry.detail


def test_admin_sets_or_generates_a_password(app, auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    user = user_service.create_user(email="ana@example.org", password="correct horse")
    client.post(f"/users/{user.id}/password", data={"password": "a chosen password"})
    assert user_service.authenticate("ana@example.org", "a chosen password") is not None
    page = client.post(f"/users/{user.id}/password", data={"password": ""}).get_data(as_text=True)
    generated = re.search(r'id="generated-password">([^<]+)<', page).group(1)
    assert len(generated) >= 12
    assert user_service.authenticate("ana@example.org", generated) is not None
    assert user_service.authenticate("ana@example.org", "a chosen password") is None
    # Shown once: the next look at the user does not show it.
    assert generated not in client.get(f"/users/{user.id}").get_data(as_text=True)
    short = client.post(f"/users/{user.id}/password", data={"password": "short"})
    assert short.status_code == 302
    assert user_service.authenticate("ana@example.org", generated) is not None


def test_deactivate_and_reactivate(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    user = user_service.create_user(email="ana@example.org", password="correct horse")
    client.post(f"/users/{user.id}/active", data={"active": "0"})
    db.session.expire_all()
    assert db.session.get(User, user.id).active is False
    assert "Deactivated" in client.get("/users").get_data(as_text=True)
    client.post(f"/users/{user.id}/active", data={"active": "1"})
    db.session.expire_all()
    assert db.session.get(User, user.id).active is True
    assert [a for a, *_ in _entries("user") if a.startswith("user.")] == [
        "user.deactivate", "user.reactivate"]


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    boss = user_service.find_user("boss@example.org")
    page = client.post(f"/users/{boss.id}", data={"name": "", "role": "editor"},
                       follow_redirects=True).get_data(as_text=True)
    assert "last active admin" in page
    client.post(f"/users/{boss.id}/active", data={"active": "0"})
    db.session.expire_all()
    boss = db.session.get(User, boss.id)
    assert (boss.role, boss.active) == ("admin", True)
    # With a second admin, the first may step down.
    user_service.create_user(email="second@example.org", password="correct horse", role="admin")
    client.post(f"/users/{boss.id}", data={"name": "", "role": "editor"})
    db.session.expire_all()
    assert db.session.get(User, boss.id).role == "editor"


def test_an_inactive_admin_does_not_count_as_the_last_one(auth) -> None:
    auth.create("boss@example.org", role="admin")
    other = user_service.create_user(email="x@example.org", password="correct horse", role="admin")
    user_service.set_active(other, False)
    boss = user_service.find_user("boss@example.org")
    try:
        user_service.set_active(boss, False)
    except user_service.UserError as exc:
        assert "last active admin" in str(exc)
    else:
        raise AssertionError("the last active admin was deactivated")


def test_bad_user_input_is_never_a_500(auth, client) -> None:
    auth.login("boss@example.org", role="admin")
    assert client.post("/users/99999", data={"role": "admin"}).status_code == 404
    assert client.post("/users", data={"email": "x", "password": "1", "role": "god"}).status_code == 200
    user = user_service.create_user(email="ana@example.org", password="correct horse")
    assert client.post(f"/users/{user.id}", data={"role": "god"}).status_code == 200
    assert client.post(f"/users/{user.id}/password", data={"password": "x" * 5000}).status_code == 302

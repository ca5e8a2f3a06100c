"""One owner per transaction: services leave the commit to their caller, views commit once with
their audit entry, and a request that fails saves nothing and gets the styled error page.

The test client's requests share the test's session, so a view that forgot to commit would
still look saved to a plain read; each test rolls back first, which throws away anything
uncommitted, then reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.domain.responses import Response
from app.domain.segments import parse
from app.extensions import db
from app.models import AuditEntry, Contact, ContactList, Recipient, User
from app.services import contacts, segments, settings, users
from app.services.responses import apply_event
from app.services.tokens import recipient_token
from tests.factories import build_reported


def _contact(email: str = "ann@example.org") -> int:
    contact = Contact(email=email, email_key=email)
    db.session.add(contact)
    db.session.commit()
    return contact.id


def _audit_actions() -> list[str]:
    return list(db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())


def test_services_leave_the_commit_to_their_caller(app: Flask) -> None:
    contact_id = _contact()
    batch_size = settings.get("batch_size")
    recipient_id = db.session.execute(select(Recipient.id).where(
        Recipient.mailing_id == build_reported([Response.SENT]).id)).scalar_one()

    contact = db.session.get(Contact, contact_id)
    assert contact is not None
    contacts.set_do_not_email(contact, "asked by phone")
    contacts.create_list("VIP")
    contacts.record_transaction(contact_id, datetime.now(UTC) - timedelta(hours=1))
    segments.create_segment("Ann", parse({"match": "all", "conditions": [
        {"subject": "email", "op": "equals", "value": "ann@example.org"}]}))
    users.create_user(email="new@example.org", password="correct horse")
    settings.set("batch_size", str(batch_size + 1))
    apply_event(recipient_id, kind="open", source="tracking", occurred_at=datetime.now(UTC))
    # Everything above is visible in the session until the caller decides.
    assert db.session.get(Recipient, recipient_id).response == Response.OPENED.value

    db.session.rollback()
    contact = db.session.get(Contact, contact_id)
    assert contact is not None and contact.do_not_email is False
    assert contact.last_transaction_at is None
    assert db.session.execute(select(func.count()).select_from(ContactList)).scalar_one() == 0
    assert users.find_user("new@example.org") is None
    assert settings.get("batch_size") == batch_size
    recipient = db.session.get(Recipient, recipient_id)
    assert recipient is not None and (recipient.response, recipient.opens) == ("sent", 0)


def test_contact_views_commit_their_change_with_its_audit_entry(app: Flask, auth,
                                                                 client: FlaskClient) -> None:
    contact_id = _contact()
    auth.login()
    assert client.post(f"/contacts/{contact_id}/do-not-email",
                       data={"reason": "asked by phone"}).status_code == 302
    db.session.rollback()
    contact = db.session.get(Contact, contact_id)
    assert contact is not None and contact.do_not_email is True
    assert contact.do_not_email_reason == "asked by phone"
    assert _audit_actions() == ["login", "contact.do_not_email"]
    assert client.post("/contacts/lists", data={"name": "VIP"}).status_code == 302
    db.session.rollback()
    assert contacts.get_list_by_name("VIP") is not None
    assert _audit_actions() == ["login", "contact.do_not_email", "list.create"]


def test_a_refused_change_saves_nothing_not_even_its_audit_entry(app: Flask, auth,
                                                                 client: FlaskClient) -> None:
    auth.login("admin@example.org", role="admin")
    response = client.post("/users", data={"email": "admin@example.org",
                                           "password": "correct horse", "role": "viewer"})
    assert response.status_code == 200 and b"exists already" in response.data
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(User)).scalar_one() == 1
    assert _audit_actions() == ["login"]


def test_user_and_settings_views_commit(app: Flask, auth, client: FlaskClient) -> None:
    auth.login("admin@example.org", role="admin")
    assert client.post("/users", data={"email": "ana@example.org", "password": "correct horse",
                                       "role": "viewer"}).status_code == 302
    db.session.rollback()
    ana = users.find_user("ana@example.org")
    assert ana is not None and ana.role == "viewer"
    values = {key: str(settings.get(key)) for key in settings.SPECS}
    values["batch_size"] = "321"
    assert client.post("/settings", data=values).status_code == 302
    db.session.rollback()
    assert settings.get("batch_size") == 321
    assert _audit_actions() == ["login", "user.create", "settings.save"]


def test_the_open_pixel_commits_the_open(app: Flask, client: FlaskClient) -> None:
    mailing = build_reported([Response.SENT])
    recipient_id = db.session.execute(
        select(Recipient.id).where(Recipient.mailing_id == mailing.id)).scalar_one()
    assert client.get(f"/t/o/{recipient_token(recipient_id)}",
                      headers={"User-Agent": "Thunderbird/128"}).status_code == 200
    db.session.rollback()
    recipient = db.session.get(Recipient, recipient_id)
    assert recipient is not None and (recipient.response, recipient.opens) == ("opened", 1)


def test_a_failing_request_is_rolled_back_and_gets_the_styled_page(app: Flask) -> None:
    contact_id = _contact()

    @app.route("/_test/fails-half-way")
    def fails_half_way() -> str:
        contact = db.session.get(Contact, contact_id)
        assert contact is not None
        contacts.set_do_not_email(contact, "half way")
        db.session.flush()
        raise RuntimeError("something broke after the change")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/_test/fails-half-way")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Something went wrong" in page and "nothing was saved" in page
    contact = db.session.get(Contact, contact_id)
    assert contact is not None and contact.do_not_email is False

"""Settings: admins mark an email type transactional (when adding it, or later) and back."""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import AuditEntry, EmailType


def test_admin_marks_a_type_transactional_and_back(app, auth, client):
    auth.login("admin@example.org", role="admin")
    added = client.post("/settings/email-types",
                        data={"name": "Receipts", "description": "", "transactional": "y"})
    assert added.status_code == 302
    receipts = db.session.execute(select(EmailType).where(EmailType.name == "Receipts")).scalar_one()
    assert receipts.transactional is True
    client.post("/settings/email-types", data={"name": "Offers", "description": ""})
    offers = db.session.execute(select(EmailType).where(EmailType.name == "Offers")).scalar_one()
    assert offers.transactional is False
    page = client.get("/settings").get_data(as_text=True)
    assert f'data-transactional="{receipts.id}"' in page
    assert f'data-transactional="{offers.id}"' not in page

    assert client.post(f"/settings/email-types/{offers.id}/transactional",
                       data={"transactional": "1"}).status_code == 302
    assert client.post(f"/settings/email-types/{receipts.id}/transactional",
                       data={"transactional": "0"}).status_code == 302
    db.session.expire_all()
    assert (db.session.get(EmailType, offers.id).transactional,
            db.session.get(EmailType, receipts.id).transactional) == (True, False)
    details = db.session.execute(select(AuditEntry.detail).where(
        AuditEntry.action == "email_type.transactional").order_by(AuditEntry.id)).scalars().all()
    assert details == ["transactional", "not transactional"]
    assert client.post("/settings/email-types/999/transactional",
                       data={"transactional": "1"}).status_code == 404
    assert client.post("/settings/email-types/99999999999999999999999/transactional",
                       data={"transactional": "1"}).status_code == 404


def test_an_editor_cannot_mark_a_type_transactional(app, auth, client):
    offers = EmailType(name="Offers")
    db.session.add(offers)
    db.session.commit()
    auth.login()  # an editor
    response = client.post(f"/settings/email-types/{offers.id}/transactional",
                           data={"transactional": "1"})
    assert response.status_code == 403
    db.session.expire_all()
    assert db.session.get(EmailType, offers.id).transactional is False

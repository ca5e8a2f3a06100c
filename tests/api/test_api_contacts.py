"""Contacts through the API: upsert one and in bulk, read, flags, email types, delete, erase."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from app.extensions import db
from app.models import Contact, EmailType, ListMember, Recipient, Suppression, Transaction, TypeOptOut
from app.services import contacts as contacts_service
from app.services.suppressions import address_hash
from tests.api.conftest import add_contact, table_counts


def test_upsert_creates_then_updates(client, headers):
    body = {"email": "Anna@Example.ORG ", "name": "Anna", "fields": {"city": "Lyon", "vip": True},
            "time_zone": "Europe/Paris", "lists": ["Customers"]}
    created = client.post("/api/v1/contacts", json=body, headers=headers)
    assert created.status_code == 201
    out = created.get_json()
    assert out["status"] == "created"
    contact = out["contact"]
    assert (contact["email"], contact["name"], contact["fields"], contact["time_zone"]) == (
        "Anna@example.org", "Anna", {"city": "Lyon", "vip": True}, "Europe/Paris")
    assert [x["name"] for x in contact["lists"]] == ["Customers"]
    assert contact["created_at"].endswith("Z") and contact["last_transaction_at"] is None

    updated = client.post("/api/v1/contacts", json={"email": "anna@example.org",
                                                    "fields": {"city": None, "size": 42}},
                          headers=headers)
    assert updated.status_code == 200
    again = updated.get_json()["contact"]
    assert again["id"] == contact["id"] and again["status"] if False else True
    assert again["name"] == "Anna" and again["fields"] == {"vip": True, "size": 42}
    assert again["time_zone"] == "Europe/Paris"
    assert db.session.execute(select(func.count()).select_from(Contact)).scalar_one() == 1


def test_upsert_leaves_flags_alone(client, headers):
    add_contact("bounced@example.org", valid=False, invalid_reason="hard bounce", do_not_email=True,
                do_not_email_reason="complaint")
    response = client.post("/api/v1/contacts", json={"email": "bounced@example.org", "name": "B"},
                           headers=headers)
    out = response.get_json()["contact"]
    assert (out["valid"], out["do_not_email"], out["name"]) == (False, True, "B")


def test_bulk_results_per_item(client, headers):
    add_contact("old@example.org", name="Old")
    items = [{"email": "new1@example.org", "name": "N1", "lists": ["Bulk"]},
             {"email": "OLD@example.org", "name": "Renamed"},
             {"email": "not-an-address"},
             "a string",
             {"email": "new1@example.org", "name": "again"},
             {"email": "ok@example.org", "time_zone": "Nowhere/City"},
             {"email": "new2@example.org", "fields": {"n": 1}}]
    response = client.post("/api/v1/contacts/bulk", json={"contacts": items}, headers=headers)
    assert response.status_code == 200
    out = response.get_json()
    assert (out["created"], out["updated"], out["refused"]) == (2, 1, 4)
    statuses = [(r["index"], r["status"]) for r in out["results"]]
    assert statuses == [(0, "created"), (1, "updated"), (2, "refused"), (3, "refused"),
                        (4, "refused"), (5, "refused"), (6, "created")]
    errors = {r["index"]: r["errors"] for r in out["results"]}
    assert errors[2][0]["field"] == "email"
    assert errors[4] == [{"field": "email", "detail": "the same address as item 0"}]
    assert errors[5][0]["field"] == "time_zone"
    names = dict(db.session.execute(select(Contact.email_key, Contact.name)).all())
    assert names == {"old@example.org": "Renamed", "new1@example.org": "N1", "new2@example.org": ""}
    assert db.session.execute(select(func.count()).select_from(ListMember)).scalar_one() == 1


def test_bulk_of_ten_thousand(client, headers):
    items = [{"email": f"p{i}@example.org", "fields": {"i": i}} for i in range(10_000)]
    response = client.post("/api/v1/contacts/bulk", json={"contacts": items}, headers=headers)
    assert response.status_code == 200
    assert response.get_json()["created"] == 10_000
    response = client.post("/api/v1/contacts/bulk", json={"contacts": items + [{"email": "x@example.org"}]},
                           headers=headers)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "contacts"


def test_read_by_id_and_address(client, headers):
    contact = add_contact("read@example.org", name="R", fields={"a": "1"}, time_zone="Asia/Tokyo")
    kind = EmailType(name="Offers")
    db.session.add(kind)
    db.session.flush()
    db.session.add(TypeOptOut(contact_id=contact.id, email_type_id=kind.id))
    db.session.commit()
    by_id = client.get(f"/api/v1/contacts/{contact.id}", headers=headers).get_json()
    by_email = client.get("/api/v1/contacts/lookup?email=READ@example.org", headers=headers).get_json()
    assert by_id == by_email
    assert by_id["unsubscribed_email_types"] == [{"id": kind.id, "name": "Offers"}]
    assert by_id["time_zone"] == "Asia/Tokyo" and by_id["fields"] == {"a": "1"}
    missing = client.get("/api/v1/contacts/lookup?email=nobody@example.org", headers=headers)
    assert missing.status_code == 404


def test_flags_and_email_types(client, headers):
    contact = add_contact("flags@example.org")
    db.session.add(EmailType(name="News"))
    db.session.commit()
    out = client.patch(f"/api/v1/contacts/{contact.id}", json={"do_not_email": True,
                                                               "do_not_email_reason": "asked by phone"},
                       headers=headers).get_json()
    assert (out["do_not_email"], out["do_not_email_reason"]) == (True, "asked by phone")
    out = client.patch(f"/api/v1/contacts/{contact.id}", json={"do_not_email": False}, headers=headers)
    assert out.get_json()["do_not_email"] is False

    left = client.post(f"/api/v1/contacts/{contact.id}/unsubscribe", json={"email_type": "News"},
                       headers=headers).get_json()
    assert (left["subscribed"], left["changed"]) == (False, True)
    assert db.session.execute(select(func.count()).select_from(TypeOptOut)).scalar_one() == 1
    again = client.post(f"/api/v1/contacts/{contact.id}/unsubscribe", json={"email_type": "News"},
                        headers=headers).get_json()
    assert again["changed"] is False
    back = client.post(f"/api/v1/contacts/{contact.id}/resubscribe",
                       json={"email_type_id": left["email_type"]["id"]}, headers=headers).get_json()
    assert (back["subscribed"], back["changed"]) == (True, True)
    assert db.session.execute(select(func.count()).select_from(TypeOptOut)).scalar_one() == 0
    unknown = client.post(f"/api/v1/contacts/{contact.id}/unsubscribe", json={"email_type": "Nope"},
                          headers=headers)
    assert unknown.status_code == 422 and unknown.get_json()["errors"][0]["field"] == "email_type"


def test_delete_then_add_again(client, headers):
    contact = add_contact("gone@example.org")
    assert client.delete(f"/api/v1/contacts/{contact.id}", headers=headers).status_code == 204
    assert db.session.execute(select(func.count()).select_from(Contact)).scalar_one() == 0
    again = client.post("/api/v1/contacts", json={"email": "gone@example.org"}, headers=headers)
    assert again.status_code == 201


def test_erase_and_no_way_back(app, client, headers):
    from app.models import Mailing

    contact = add_contact("Erase.Me@Example.org", name="Eve", fields={"phone": "123"})
    mailing = Mailing(name="Past", status="sent")
    db.session.add(mailing)
    db.session.flush()
    db.session.add(Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                             response="delivered", merge_data={"name": "Eve"}))
    db.session.add(Transaction(contact_id=contact.id, occurred_at=contact.created_at, reference="r"))
    db.session.commit()

    response = client.post(f"/api/v1/contacts/{contact.id}/erase", headers=headers)
    assert response.status_code == 200
    assert response.get_json()["email_sha256"] == address_hash("erase.me@example.org")
    assert db.session.execute(select(func.count()).select_from(Contact)).scalar_one() == 0
    assert db.session.execute(select(func.count()).select_from(Transaction)).scalar_one() == 0
    assert db.session.execute(select(Suppression.email_hash)).scalars().all() == [
        address_hash("erase.me@example.org")]
    recipient = db.session.execute(select(Recipient)).scalar_one()
    assert (recipient.address, recipient.merge_data, recipient.response) == ("erased", None, "delivered")

    before = table_counts()
    refused = client.post("/api/v1/contacts", json={"email": " ERASE.me@example.org"}, headers=headers)
    assert refused.status_code == 409
    assert refused.get_json()["type"] == "/api/docs#problem-suppressed"
    bulk = client.post("/api/v1/contacts/bulk", json={"contacts": [{"email": "erase.me@example.org"},
                                                                   {"email": "fine@example.org"}]},
                       headers=headers).get_json()
    assert [r["status"] for r in bulk["results"]] == ["refused", "created"]
    assert "erased" in bulk["results"][0]["errors"][0]["detail"]

    csv = io.BytesIO(b"email,name\nErase.Me@example.org,Eve\nother@example.org,O\n")
    result = contacts_service.import_csv(csv, list_name=None)
    assert (result.created, result.rejected) == (1, 1)
    assert "erased" in result.errors[0].reason and result.errors[0].line == 2
    keys = set(db.session.execute(select(Contact.email_key)).scalars())
    assert keys == {"fine@example.org", "other@example.org"}
    assert before["suppressions"] == 1


def test_pagination_walks_every_row_once(client, headers):
    for i in range(23):
        add_contact(f"page{i}@example.org")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        url = "/api/v1/contacts?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=headers).get_json()
        pages += 1
        seen += [c["id"] for c in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
        if pages == 2:  # a contact added mid-walk is met once, at the end
            add_contact("late@example.org")
    ids = sorted(db.session.execute(select(Contact.id)).scalars())
    assert seen == ids and len(seen) == 24 and pages == 5


def test_bad_cursor_and_limit(client, headers):
    bad = client.get("/api/v1/contacts?cursor=abc", headers=headers)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "cursor"
    too_many = client.get("/api/v1/contacts?limit=5000", headers=headers)
    assert too_many.status_code == 422 and too_many.get_json()["errors"][0]["field"] == "limit"
    add_contact("x@example.org")
    add_contact("y@example.org")
    lists_cursor = client.get("/api/v1/contacts?limit=1", headers=headers).get_json()["next_cursor"]
    other = client.get(f"/api/v1/lists?cursor={lists_cursor}", headers=headers)
    assert other.status_code == 422

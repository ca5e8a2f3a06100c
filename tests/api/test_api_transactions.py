"""Transactions through the API: idempotency keys, and the inactivity hold lifted at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, ContactList, ListMember, Mailing, MailingList, Transaction
from app.services import audience
from tests.api.conftest import add_contact, table_counts


def _count() -> int:
    return db.session.execute(select(func.count()).select_from(Transaction)).scalar_one()


def test_record_one_by_address_and_by_id(client, headers):
    contact = add_contact("buyer@example.org")
    response = client.post("/api/v1/transactions", json={
        "email": "BUYER@example.org", "occurred_at": "2026-03-01T10:00:00+02:00", "amount": "49.9",
        "reference": "order-1"}, headers=headers)
    assert response.status_code == 201
    out = response.get_json()
    assert out["status"] == "recorded"
    assert out["transaction"]["occurred_at"] == "2026-03-01T08:00:00Z"
    assert out["transaction"]["amount"] == "49.90" and out["transaction"]["contact_id"] == contact.id
    response = client.post("/api/v1/transactions", json={
        "contact_id": contact.id, "occurred_at": "2026-03-02T10:00:00Z"}, headers=headers)
    assert response.status_code == 201
    assert _count() == 2
    db.session.expire_all()
    assert db.session.get(Contact, contact.id).last_transaction_at == datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_an_older_transaction_does_not_move_the_date_back(client, headers):
    contact = add_contact("c@example.org", last_transaction_at=datetime(2026, 5, 1, tzinfo=UTC))
    client.post("/api/v1/transactions", json={"contact_id": contact.id,
                                              "occurred_at": "2025-01-01T00:00:00Z"}, headers=headers)
    db.session.expire_all()
    assert db.session.get(Contact, contact.id).last_transaction_at == datetime(2026, 5, 1, tzinfo=UTC)


def test_the_same_idempotency_key_records_nothing(client, headers):
    add_contact("idem@example.org")
    body = {"email": "idem@example.org", "occurred_at": "2026-03-01T10:00:00Z", "amount": 10,
            "idempotency_key": "order-77"}
    first = client.post("/api/v1/transactions", json=body, headers=headers)
    before = table_counts()
    second = client.post("/api/v1/transactions", json={**body, "amount": 99}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json()["status"] == "duplicate"
    assert second.get_json()["transaction"] == first.get_json()["transaction"]
    bulk = client.post("/api/v1/transactions/bulk", json={"transactions": [
        body, {**body, "idempotency_key": "order-78"}, {**body, "idempotency_key": "order-78"}]},
        headers=headers).get_json()
    assert [r["status"] for r in bulk["results"]] == ["duplicate", "recorded", "duplicate"]
    assert bulk["results"][2]["transaction"] == bulk["results"][1]["transaction"]
    assert bulk["results"][0]["transaction"]["id"] == first.get_json()["transaction"]["id"]
    assert _count() == 2
    assert table_counts()["transactions"] == before["transactions"] + 1


def test_refusals_name_the_field(client, headers):
    add_contact("r@example.org")
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    bulk = client.post("/api/v1/transactions/bulk", json={"transactions": [
        {"email": "nobody@example.org", "occurred_at": "2026-01-01T00:00:00Z"},
        {"contact_id": 999, "occurred_at": "2026-01-01T00:00:00Z"},
        {"email": "r@example.org", "occurred_at": future},
        {"email": "r@example.org", "occurred_at": "2026-01-01T00:00:00"},
        {"occurred_at": "2026-01-01T00:00:00Z"},
        {"email": "r@example.org", "occurred_at": "2026-01-01T00:00:00Z", "amount": "abc"},
        {"email": "r@example.org", "occurred_at": "2026-01-01T00:00:00Z"},
    ]}, headers=headers).get_json()
    fields = [[e["field"] for e in r["errors"]] for r in bulk["results"]]
    assert fields == [["email"], ["contact_id"], ["occurred_at"], ["occurred_at"], ["item"],
                      ["amount"], []]
    assert (bulk["recorded"], bulk["refused"]) == (1, 6)
    one = client.post("/api/v1/transactions", json={"email": "nobody@example.org",
                                                    "occurred_at": "2026-01-01T00:00:00Z"},
                      headers=headers)
    assert one.status_code == 422 and one.get_json()["errors"][0]["field"] == "email"


def test_a_transaction_lifts_the_two_year_hold(client, headers):
    old = datetime.now(UTC) - timedelta(days=900)
    held = add_contact("sleeper@example.org", created_at=old, last_transaction_at=old)
    customers = ContactList(name="Customers")
    db.session.add(customers)
    db.session.flush()
    db.session.add(ListMember(list_id=customers.id, contact_id=held.id))
    mailing = Mailing(name="Spring", subject="Hi", from_address="shop@example.org")
    db.session.add(mailing)
    db.session.flush()
    db.session.add(MailingList(mailing_id=mailing.id, list_id=customers.id))
    db.session.commit()
    assert audience.preview_counts(mailing) == {Response.INACTIVE.value: 1}

    response = client.post("/api/v1/transactions", json={
        "email": "sleeper@example.org", "occurred_at": datetime.now(UTC).isoformat()}, headers=headers)
    assert response.status_code == 201
    db.session.expire_all()
    assert client.get(f"/api/v1/contacts/{held.id}", headers=headers).get_json()["inactive"] is False
    assert audience.preview_counts(mailing) == {Response.PLANNED.value: 1}
    counts = audience.materialise(mailing)
    assert counts == {Response.PLANNED.value: 1}


def test_a_transaction_after_a_click_is_a_conversion(client, headers):
    from app.models import Conversion, Recipient, ResponseEvent

    contact = add_contact("clicker@example.org")
    other = add_contact("quiet@example.org")
    mailing = Mailing(name="Sale", status="sent", subject="Sale", from_address="shop@example.org")
    db.session.add(mailing)
    db.session.flush()
    recipient = Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                          response="delivered")
    db.session.add(recipient)
    db.session.flush()
    clicked_at = datetime.now(UTC) - timedelta(hours=2)
    db.session.add(ResponseEvent(recipient_id=recipient.id, mailing_id=mailing.id, kind="click",
                                 source="tracking", occurred_at=clicked_at, applied=True))
    db.session.commit()
    now = datetime.now(UTC).isoformat()
    bulk = client.post("/api/v1/transactions/bulk", json={"transactions": [
        {"contact_id": contact.id, "occurred_at": now, "amount": "20.00"},
        {"contact_id": other.id, "occurred_at": now, "amount": "5.00"}]}, headers=headers).get_json()
    assert bulk["recorded"] == 2
    conversions = db.session.execute(select(Conversion)).scalars().all()
    assert [(c.mailing_id, c.transaction_id, str(c.amount)) for c in conversions] == [
        (mailing.id, bulk["results"][0]["transaction"]["id"], "20.00")]

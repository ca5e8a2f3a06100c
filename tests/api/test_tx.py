"""POST /api/v1/tx against a real Redis, RQ worker and SMTP server: idempotency, refusals as
problems naming the field and the reason, the transactional type's rules, scopes."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import AuditEntry, EmailType, Mailing, Recipient, TypeOptOut
from app.services import suppressions
from tests.api.conftest import add_contact
from tests.factories import record_event as apply_event
from tests.factories import run_every_queue as run_worker

BODY = {"subject": "Receipt {{ order }}", "text": "Thanks {{ name }}: order {{ order }}",
        "from_address": "shop@shop.example", "from_name": "Shop"}


@pytest.fixture
def tx_headers(make_token) -> dict[str, str]:
    return make_token(["tx:send"])[1]


def post(client, headers, **body):
    return client.post("/api/v1/tx", json={**BODY, **body}, headers=headers)


def counts() -> tuple[int, int, int]:
    return tuple(db.session.execute(select(func.count()).select_from(m)).scalar_one()
                 for m in (Mailing, Recipient, AuditEntry))


def test_same_idempotency_key_twice_one_message_at_the_sink(app, client, redis_conn, smtp,  # noqa: F811
                                                            tx_headers):
    anna = add_contact("anna@example.org", name="Anna", last_transaction_at=datetime.now(UTC))
    first = post(client, tx_headers, to={"contact_id": anna.id}, data={"order": "A-1"},
                 idempotency_key="order-A-1")
    assert first.status_code == 202, first.get_json()
    one = first.get_json()
    assert one["status"] == "queued" and one["response"] == "planned" and not one["replayed"]
    assert one["created_at"].endswith("Z") or "+00:00" in one["created_at"]
    second = client.post("/api/v1/tx", json={**BODY, "to": {"contact_id": anna.id},
                                             "data": {"order": "A-1"}},
                         headers={**tx_headers, "Idempotency-Key": "order-A-1"})
    assert second.status_code == 200
    assert second.get_json()["id"] == one["id"] and second.get_json()["replayed"] is True
    run_worker(redis_conn)
    third = post(client, tx_headers, to={"contact_id": anna.id}, data={"order": "A-1"},
                 idempotency_key="order-A-1")
    run_worker(redis_conn)
    assert third.get_json()["id"] == one["id"] and third.get_json()["status"] == "sent"
    assert len(smtp.handler.messages) == 1
    assert email.message_from_bytes(smtp.handler.messages[0].data)["Subject"] == "Receipt A-1"
    read = client.get(f"/api/v1/tx/{one['id']}", headers=tx_headers).get_json()
    assert read["response"] == "sent" and read["handed_off_at"] is not None
    assert counts()[:2] == (1, 1)


def test_key_of_another_token_is_a_conflict(app, client, redis_conn, make_token, tx_headers):
    anna = add_contact("anna@example.org", last_transaction_at=datetime.now(UTC))
    assert post(client, tx_headers, to={"contact_id": anna.id}, idempotency_key="k1"
                ).status_code == 202
    other = make_token(["tx:send"], name="other")[1]
    response = post(client, other, to={"contact_id": anna.id}, idempotency_key="k1")
    assert response.status_code == 409
    assert response.get_json()["errors"][0]["field"] == "idempotency_key"
    mailing_id = db.session.execute(select(Mailing.id)).scalar_one()
    assert client.get(f"/api/v1/tx/{mailing_id}", headers=other).status_code == 404


@pytest.mark.parametrize(("case", "reason", "field"), [
    ("do_not_email", "do_not_email", "to.contact_id"),
    ("suppressed", "suppressed", "to.email"),
    ("left_type", "unsubscribed_from_type", "to.contact_id"),
    ("inactive", "inactive", "to.contact_id"),
])
def test_refused_recipients_get_a_clear_problem_and_nothing_changes(
        app, client, redis_conn, tx_headers, case, reason, field):
    offers = EmailType(name="Offers")
    db.session.add(offers)
    db.session.commit()
    anna = add_contact("anna@example.org", last_transaction_at=datetime.now(UTC))
    body: dict = {"to": {"contact_id": anna.id}}
    if case == "do_not_email":
        anna.do_not_email, anna.do_not_email_reason = True, "unsubscribed"
    elif case == "suppressed":
        suppressions.suppress("gone@example.org")
        body = {"to": {"email": "Gone@example.org"}}
    elif case == "left_type":
        db.session.add(TypeOptOut(contact_id=anna.id, email_type_id=offers.id))
        body["email_type_id"] = offers.id
    else:
        anna.last_transaction_at = datetime.now(UTC) - timedelta(days=800)
        anna.created_at = datetime.now(UTC) - timedelta(days=900)
    db.session.commit()
    before = counts()
    response = post(client, tx_headers, **body)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["reason"] == reason and problem["type"].endswith("#problem-recipient-refused")
    assert problem["errors"][0]["field"] == field and problem["detail"]
    assert counts() == before
    assert redis_conn.llen("rq:queue:transactional") == 0


def test_transactional_type_reaches_who_left_other_types_and_the_inactive(
        app, client, redis_conn, smtp, tx_headers):  # noqa: F811
    offers = EmailType(name="Offers")
    receipts = EmailType(name="Receipts", transactional=True)
    db.session.add_all([offers, receipts])
    db.session.commit()
    anna = add_contact("anna@example.org", name="Anna",
                       last_transaction_at=datetime.now(UTC) - timedelta(days=900))
    db.session.add_all([TypeOptOut(contact_id=anna.id, email_type_id=offers.id),
                        TypeOptOut(contact_id=anna.id, email_type_id=receipts.id)])
    db.session.commit()
    response = post(client, tx_headers, to={"email": "ANNA@example.org"},
                    email_type_id=receipts.id, data={"order": "7"})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["contact_id"] == anna.id
    run_worker(redis_conn)
    assert [m.rcpt for m in smtp.handler.messages] == [["anna@example.org"]]
    # A complaint about it: do-not-email, which stops transactional mail too.
    rid = response.get_json()["recipient_id"]
    apply_event(rid, kind="spam", source="generic", occurred_at=datetime.now(UTC))
    refused = post(client, tx_headers, to={"contact_id": anna.id}, email_type_id=receipts.id)
    assert refused.status_code == 422 and refused.get_json()["reason"] == "do_not_email"
    assert "spam complaint" in refused.get_json()["detail"]
    db.session.expire_all()
    assert db.session.get(Recipient, rid).response == Response.SPAM.value


def test_bad_requests_name_their_field(app, client, tx_headers):
    anna = add_contact("anna@example.org", last_transaction_at=datetime.now(UTC))
    cases = [
        ({"to": {}}, "to"),
        ({"to": {"contact_id": anna.id, "email": "a@example.org"}}, "to"),
        ({"to": {"email": "not-an-address"}}, "to.email"),
        ({"to": {"contact_id": anna.id}, "from_address": "nobody"}, "from_address"),
        ({"to": {"contact_id": anna.id}, "idempotency_key": "a b"}, "idempotency_key"),
        ({"to": {"contact_id": anna.id}, "data": {"email": "x"}}, "data.email"),
        ({"to": {"contact_id": anna.id}, "text": "{% for %}"}, "text"),
        ({"to": {"contact_id": anna.id}, "mailing_id": 12345}, "subject"),  # not both
        ({"to": {"contact_id": anna.id}, "mailing_id": 12345, "subject": None, "text": None},
         "mailing_id"),
        ({"to": {"contact_id": 99999}}, "to.contact_id"),
        ({"to": {"contact_id": anna.id}, "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        response = post(client, tx_headers, **body)
        assert response.status_code in (404, 422), (body, response.get_json())
        fields = [e["field"] for e in response.get_json().get("errors", [])]
        assert any(f == field or f.startswith(field + ".") for f in fields), (body, fields)
    assert counts()[:2] == (0, 0)


def test_wrong_scope_sends_nothing(app, client, redis_conn, make_token):
    anna = add_contact("anna@example.org", last_transaction_at=datetime.now(UTC))
    headers = make_token(["mailings:send", "mailings:write", "contacts:write"])[1]
    before = counts()
    response = post(client, headers, to={"contact_id": anna.id})
    assert response.status_code == 403 and response.get_json()["scope"] == "tx:send"
    assert client.get("/api/v1/tx/1", headers=headers).status_code == 403
    assert counts() == before
    assert redis_conn.llen("rq:queue:transactional") == 0

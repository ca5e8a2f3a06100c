"""POST /api/v1/tx to a bare address after its hard bounce or complaint: a 422 problem with the
reason; the address may become a contact again through the API, do not email."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEntry, Contact, Mailing, Recipient
from app.redis_conn import QUEUE_NAMES
from app.services import suppressions
from app.services.responses import apply_event

BODY = {"subject": "Receipt {{ order }}", "text": "Order {{ order }}",
        "from_address": "shop@shop.example", "data": {"order": "7"}}


@pytest.fixture
def tx_headers(make_token) -> dict[str, str]:
    return make_token(["tx:send", "contacts:write", "contacts:read"])[1]


def counts() -> tuple[int, int, int, int]:
    return tuple(db.session.execute(select(func.count()).select_from(m)).scalar_one()
                 for m in (Mailing, Recipient, AuditEntry, Contact))


@pytest.mark.parametrize(("kind", "words"), [("hard_bounce", "hard bounce"),
                                             ("spam", "spam complaint")])
def test_next_message_to_a_bounced_or_complaining_bare_address_is_refused(
        app, client, redis_conn, smtp, tx_headers, kind, words):
    first = client.post("/api/v1/tx", json={**BODY, "to": {"email": "Walk.In@Example.com"}},
                        headers=tx_headers)
    assert first.status_code == 202, first.get_json()
    assert first.get_json()["contact_id"] is None
    SimpleWorker(list(QUEUE_NAMES), connection=redis_conn).work(burst=True)
    assert len(smtp.handler.messages) == 1
    apply_event(first.get_json()["recipient_id"], kind=kind, source="generic",
                occurred_at=datetime.now(UTC))
    db.session.commit()

    before = counts()
    again = client.post("/api/v1/tx", json={**BODY, "to": {"email": "walk.in@example.com"}},
                        headers=tx_headers)
    assert again.status_code == 422
    assert again.mimetype == "application/problem+json"
    problem = again.get_json()
    assert problem["reason"] == "do_not_email"
    assert problem["errors"][0]["field"] == "to.email"
    assert f"({words})" in problem["detail"]
    assert counts() == before
    assert redis_conn.llen("rq:queue:transactional") == 0

    # The address may become a contact: it does, marked do not email for the same reason.
    created = client.post("/api/v1/contacts", json={"email": "walk.in@example.com", "name": "W"},
                          headers=tx_headers)
    assert created.status_code == 201, created.get_json()
    contact = created.get_json()["contact"]
    assert (contact["do_not_email"], contact["do_not_email_reason"]) == (True, words)
    assert contact["valid"] is (kind != "hard_bounce")
    refused = client.post("/api/v1/tx", json={**BODY, "to": {"contact_id": contact["id"]}},
                          headers=tx_headers)
    assert refused.status_code == 422 and refused.get_json()["reason"] == "do_not_email"


def test_bulk_upsert_refuses_only_the_erased_address(app, client, tx_headers):
    suppressions.suppress("gone@example.com")
    suppressions.remember({"bounced@example.com": "hard_bounce"})
    db.session.commit()
    out = client.post("/api/v1/contacts/bulk", json={"contacts": [
        {"email": "gone@example.com"}, {"email": "Bounced@example.com"},
        {"email": "fresh@example.com"}]}, headers=tx_headers).get_json()
    assert [r["status"] for r in out["results"]] == ["refused", "created", "created"]
    flags = dict(db.session.execute(select(Contact.email_key, Contact.do_not_email)).all())
    assert flags == {"bounced@example.com": True, "fresh@example.com": False}

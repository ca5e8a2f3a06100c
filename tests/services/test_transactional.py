"""Transactional email through the real services, a real Redis, RQ worker and SMTP server."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.domain.transactional import Refusal
from app.extensions import db
from app.models import (
    Contact,
    EmailType,
    Mailing,
    MailingVersion,
    Recipient,
    TypeOptOut,
)
from app.services import mailings, reports, suppressions, totals
from app.services import transactional as tx
from app.services.history import rebuild_message
from tests.factories import make_audience, make_mailing
from tests.factories import record_event as apply_event
from tests.factories import run_every_queue as run_worker

RECEIPT = dict(subject="Receipt {{ order }}", text="Hello {{ name }}, order {{ order }}: {{ total }}",
               html="<p>Order <b>{{ order }}</b></p><a href=\"https://shop.example/o\">See it</a>",
               from_address="shop@shop.example", from_name="Shop")


def contact(address: str = "ana@example.org", **values) -> Contact:
    values.setdefault("last_transaction_at", datetime.now(UTC))
    c = Contact(email=address, email_key=address.lower(), name="Ana", **values)
    db.session.add(c)
    db.session.commit()
    return c


def email_type(name: str, transactional: bool = False) -> EmailType:
    t = EmailType(name=name, transactional=transactional)
    db.session.add(t)
    db.session.commit()
    return t


def send(**values) -> tx.TxResult:
    req = tx.TxRequest(**{**RECEIPT, **values})
    result = tx.send(req)
    db.session.commit()
    return result


def refusal_of(**values) -> tx.TxError:
    with pytest.raises(tx.TxError) as caught:
        tx.send(tx.TxRequest(**{**RECEIPT, **values}))
    db.session.rollback()
    return caught.value


def test_same_idempotency_key_twice_sends_one_message(app, redis_conn, smtp):  # noqa: F811
    c = contact()
    first = send(contact_id=c.id, data={"order": "A-17", "total": "12.50"},
                 idempotency_key="order-A-17")
    assert first.replayed is False and first.status == "queued"
    again = send(contact_id=c.id, data={"order": "A-17", "total": "12.50"},
                 idempotency_key="order-A-17")
    assert again.replayed is True and again.mailing.id == first.mailing.id
    run_worker(redis_conn)
    # A third try after it went out returns the first result, now sent, and sends nothing.
    third = send(contact_id=c.id, data={"order": "A-17"}, idempotency_key="order-A-17")
    run_worker(redis_conn)
    assert third.mailing.id == first.mailing.id and third.status == "sent"
    assert third.response is Response.SENT
    assert len(smtp.handler.messages) == 1
    assert db.session.execute(select(func.count()).select_from(Mailing)).scalar_one() == 1
    msg = email.message_from_bytes(smtp.handler.messages[0].data)
    assert msg["Subject"] == "Receipt A-17"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk()
             if not p.is_multipart()}
    assert "Hello Ana, order A-17: 12.50" in parts["text/plain"]
    assert "/t/o/" in parts["text/html"] and "/t/c/" in parts["text/html"]  # tracked


def test_sent_message_is_tracked_listed_in_history_and_rebuilt_exactly(app, redis_conn,
                                                                        smtp):  # noqa: F811
    c = contact()
    result = send(contact_id=c.id, data={"order": "B-2", "total": "3"})
    run_worker(redis_conn)
    mailing = db.session.get(Mailing, result.mailing.id)
    assert mailing.status == Status.SENT.value and mailing.one_off
    recipient = db.session.get(Recipient, result.recipient.id)
    assert rebuild_message(recipient) == smtp.handler.messages[0].data
    history = reports.contact_history(c.id)
    assert [h.mailing_id for h in history] == [mailing.id]
    assert "Receipt B-2" in history[0].mailing_name
    apply_event(recipient.id, kind="open", source="tracking", occurred_at=datetime.now(UTC))
    apply_event(recipient.id, kind="click", source="tracking", occurred_at=datetime.now(UTC))
    t = reports.email_totals(totals.get(mailing.id))
    assert (t.sent, t.openers_human, t.clickers_human) == (1, 1, 1)
    db.session.refresh(recipient)
    assert recipient.response == Response.CLICKED.value
    assert history[0].one_off


def test_bare_address_and_saved_mailing_as_template(app, redis_conn, smtp):  # noqa: F811
    template = make_mailing([], subject="Welcome {{ name }}",
                            text_body="Hi {{ name }}, code {{ code }}. {{ unsubscribe_url }}",
                            html_body="")
    result = send(email="Someone@Example.NET", mailing_id=template.id,
                  subject=None, text=None, html=None, from_address=None, from_name=None,
                  data={"code": "X1"})
    assert result.recipient.contact_id is None
    assert result.recipient.address == "Someone@example.net"
    run_worker(redis_conn)
    msg = email.message_from_bytes(smtp.handler.messages[0].data)
    assert msg["Subject"] == "Welcome "  # a bare address has no name
    assert "Hi , code X1." in msg.get_payload(decode=True).decode()
    assert smtp.handler.messages[0].rcpt == ["Someone@example.net"]


def test_refusals_say_why_and_store_nothing(app, redis_conn):
    newsletter = email_type("Newsletter")
    dne = contact("dne@example.org", do_not_email=True, do_not_email_reason="spam complaint")
    left = contact("left@example.org")
    db.session.add(TypeOptOut(contact_id=left.id, email_type_id=newsletter.id))
    suppressions.suppress("Gone@Example.org")
    db.session.commit()

    e = refusal_of(contact_id=dne.id)
    assert e.refusal is Refusal.DO_NOT_EMAIL and e.field == "to.contact_id"
    assert "do not email (spam complaint)" in str(e)
    e = refusal_of(email="gone@example.org")
    assert e.refusal is Refusal.SUPPRESSED and e.field == "to.email"
    e = refusal_of(email="left@example.org", email_type_id=newsletter.id)
    assert e.refusal is Refusal.TYPE_UNSUBSCRIBED and "Newsletter" in str(e)
    e = refusal_of(email="not an address")
    assert e.refusal is Refusal.INVALID_ADDRESS and e.field == "to.email"
    e = refusal_of(contact_id=999)
    assert e.status == 404 and e.field == "to.contact_id"
    e = refusal_of(contact_id=left.id, idempotency_key="has space")
    assert e.field == "idempotency_key"
    e = refusal_of(contact_id=left.id, data={"email": "x"})
    assert e.field == "data.email"
    e = refusal_of(contact_id=left.id, text="{{ order.missing() }}", html=None)
    assert e.field == "data"
    e = refusal_of(contact_id=left.id, from_address="nobody")
    assert e.field == "from_address"
    assert db.session.execute(select(func.count()).select_from(Mailing)).scalar_one() == 0
    assert db.session.execute(select(func.count()).select_from(Recipient)).scalar_one() == 0


def test_transactional_type_ignores_type_opt_outs_and_inactivity_not_bounces(app, redis_conn,
                                                                            smtp):  # noqa: F811
    newsletter = email_type("Newsletter")
    receipts = email_type("Receipts", transactional=True)
    old = datetime.now(UTC) - timedelta(days=900)
    c = contact("ana@example.org", last_transaction_at=None)
    c.created_at = old  # never bought anything, signed up 900 days ago: held back from bulk
    db.session.add(TypeOptOut(contact_id=c.id, email_type_id=newsletter.id))
    db.session.add(TypeOptOut(contact_id=c.id, email_type_id=receipts.id))
    db.session.commit()

    e = refusal_of(contact_id=c.id)  # no type: the inactivity hold applies
    assert e.refusal is Refusal.INACTIVE
    e = refusal_of(contact_id=c.id, email_type_id=newsletter.id)
    assert e.refusal is Refusal.TYPE_UNSUBSCRIBED
    result = send(contact_id=c.id, email_type_id=receipts.id, data={"order": "1"})
    run_worker(redis_conn)  # the sender checks again right before hand-off, by the same rule
    assert db.session.get(Recipient, result.recipient.id).response == Response.SENT.value
    assert len(smtp.handler.messages) == 1

    # A hard bounce of that message: the contact is do-not-email, and transactional stops too.
    apply_event(result.recipient.id, kind="hard_bounce", source="generic",
                occurred_at=datetime.now(UTC))
    db.session.refresh(c)
    assert c.do_not_email
    e = refusal_of(contact_id=c.id, email_type_id=receipts.id)
    assert e.refusal is Refusal.DO_NOT_EMAIL and "hard bounce" in str(e)

    # A complaint by another contact stops it as well.
    other = contact("bo@example.org")
    sent = send(contact_id=other.id, email_type_id=receipts.id, data={"order": "2"})
    run_worker(redis_conn)
    apply_event(sent.recipient.id, kind="spam", source="generic", occurred_at=datetime.now(UTC))
    e = refusal_of(contact_id=other.id, email_type_id=receipts.id)
    assert e.refusal is Refusal.DO_NOT_EMAIL and "spam complaint" in str(e)
    assert len(smtp.handler.messages) == 2


def test_sender_holds_back_a_contact_who_became_do_not_email_before_hand_off(app, redis_conn,
                                                                             smtp):  # noqa: F811
    receipts = email_type("Receipts", transactional=True)
    c = contact()
    result = send(contact_id=c.id, email_type_id=receipts.id, data={"order": "3"})
    c.do_not_email = True
    db.session.commit()
    run_worker(redis_conn)
    assert smtp.handler.messages == []
    assert db.session.get(Recipient, result.recipient.id).response == Response.DO_NOT_EMAIL.value
    assert tx.get(result.mailing.id) is None  # not an API send: no token
    assert db.session.get(Mailing, result.mailing.id).status == Status.SENT.value


def test_transactional_queue_is_served_before_bulk_sending(app, redis_conn, smtp):  # noqa: F811
    bulk = make_mailing([make_audience(5)])
    mailings.send_now(bulk)
    from jobs.sending import prepare_mailing

    prepare_mailing(bulk.id)  # inline: a send job waits on the sending queue
    assert Queue("sending", connection=redis_conn).count >= 1
    c = contact("urgent@example.org")
    send(contact_id=c.id, data={"order": "9"})
    assert Queue("transactional", connection=redis_conn).count == 1
    run_worker(redis_conn)
    received = [m.rcpt[0] for m in smtp.handler.messages]
    assert received[0] == "urgent@example.org"
    assert sorted(received[1:]) == [f"user{i}@example.org" for i in range(5)]


def test_merge_data_is_frozen_with_the_version(app, redis_conn):
    c = contact()
    result = send(contact_id=c.id, data={"order": "Z"})
    version = db.session.execute(select(MailingVersion).where(
        MailingVersion.mailing_id == result.mailing.id)).scalar_one()
    assert version.content["data"] == {"order": "Z"}
    assert result.mailing.queued_at is not None

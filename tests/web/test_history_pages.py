"""A contact's email history: mailings sent to them, the timeline, the exact message, and the
one-off email from the contact page."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.extensions import db
from app.models import Contact, Mailing, Recipient
from app.services import mailings
from app.services.responses import apply_event
from tests.factories import make_audience, make_mailing, run_worker


def test_history_shows_the_mailing_timeline_and_exact_message(app, auth, client, redis_conn,
                                                              smtp):  # noqa: F811
    auth.login()
    mailing = make_mailing([make_audience(2)])
    mailing.name = "Winter <news>"
    mailings.send_now(mailing)
    run_worker(redis_conn)
    recipient = db.session.execute(
        select(Recipient).where(Recipient.address == "user1@example.org")).scalar_one()
    apply_event(recipient.id, kind="open", source="tracking",
                occurred_at=datetime.now(UTC) + timedelta(minutes=5))

    page = client.get(f"/contacts/{recipient.contact_id}").get_data(as_text=True)
    history = page[page.index('id="history"'):]
    assert "Winter &lt;news&gt;" in history and "<news>" not in history
    assert "user1@example.org" in history and "Opened" in history
    assert "Handed off to the provider" in history and "tracking" in history
    link = re.search(r'hx-get="(/mailings/recipients/\d+/_message)"', history).group(1)

    fragment = client.get(link).get_data(as_text=True)
    received = smtp.by_recipient()["user1@example.org"][0].data
    raw = html.unescape(re.search(r'data-testid="raw-message">(.*?)</pre>', fragment, re.S).group(1))
    assert raw.encode() == received  # byte for byte what the server received
    assert 'sandbox srcdoc="' in fragment and "Hello User 1" in fragment
    full = client.get(f"/mailings/{mailing.id}/recipients/{recipient.id}").get_data(as_text=True)
    assert "Timeline" in full and "Opened" in full and recipient.message_id in full


def test_contact_without_mail_has_an_empty_state(app, auth, client):
    auth.login()
    make_audience(1)
    page = client.get("/contacts/1").get_data(as_text=True)
    assert "No email has been sent to this contact yet." in page
    assert "Write a one-off email to user0@example.org" in page


def test_one_off_email_is_sent_tracked_and_not_listed(app, auth, client, redis_conn,
                                                       smtp):  # noqa: F811
    auth.login()
    make_audience(1)
    contact = db.session.get(Contact, 1)
    response = client.post(f"/mailings/one-off/{contact.id}", data={
        "from_address": "staff@example.org", "from_name": "Ann from Shop",
        "subject": "About your order", "text_body": "Hello {{ name }}, it ships today."})
    assert response.status_code == 302 and response.headers["Location"].endswith("#history")
    run_worker(redis_conn)
    mailing = db.session.execute(select(Mailing)).scalar_one()
    assert mailing.one_off and mailing.status == "sent"
    [message] = smtp.handler.messages
    assert message.rcpt == ["user0@example.org"] and b"it ships today" in message.data
    page = client.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert "About your order" in page and "one-off" in page and "Sent to provider" in page
    assert "About your order" not in client.get("/mailings").get_data(as_text=True)


def test_one_off_refused_for_do_not_email(app, auth, client):
    auth.login()
    make_audience(1)
    contact = db.session.get(Contact, 1)
    contact.do_not_email = True
    db.session.commit()
    response = client.post(f"/mailings/one-off/{contact.id}", data={
        "from_address": "staff@example.org", "subject": "Hi", "text_body": "Hello"},
        follow_redirects=True)
    assert "Email not sent: This contact is marked do not email." in response.get_data(as_text=True)
    assert db.session.execute(select(Mailing)).first() is None
    assert client.post("/mailings/one-off/999", data={}).status_code == 404


def test_one_off_refused_for_an_inactive_contact_with_the_reason(app, auth, client):
    auth.login()
    make_audience(1)
    contact = db.session.get(Contact, 1)
    contact.last_transaction_at = datetime.now(UTC) - timedelta(days=800)
    contact.created_at = datetime.now(UTC) - timedelta(days=900)
    db.session.commit()
    response = client.post(f"/mailings/one-off/{contact.id}", data={
        "from_address": "staff@example.org", "subject": "Hi", "text_body": "Hello"},
        follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "Email not sent: This contact has had no transaction for 730 days" in text
    assert db.session.execute(select(Mailing)).first() is None


def test_one_off_goes_to_the_head_of_the_sending_queue(app, auth, client, monkeypatch):
    from app.services import sending

    monkeypatch.setattr("jobs.enqueue.kick_sending", lambda *a, **k: None)
    auth.login()
    make_audience(1)
    big = Mailing(name="Big", status="sending", queued_at=datetime.now(UTC) - timedelta(hours=1))
    db.session.add(big)
    db.session.commit()
    client.post("/mailings/one-off/1", data={"from_address": "staff@example.org",
                                             "subject": "Quick", "text_body": "Hi"})
    one_off = db.session.execute(select(Mailing).where(Mailing.one_off.is_(True))).scalar_one()
    assert sending.sending_queue() == [one_off.id, big.id]

"""Bounce mail into events: the verdict about our recipient, its reason in the timeline, and
timeline-only entries for auto-replies and delivery reports (samples in tests/data/dsn)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.extensions import db
from app.models import Contact, Mailing, Recipient
from app.services import totals
from app.services.bounces import to_event
from app.services.responses import apply_events, timeline
from app.services.tokens import recipient_token

SAMPLES = Path(__file__).parents[1] / "data" / "dsn"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def recipient(app) -> Recipient:
    mailing = Mailing(name="News", status="sent")
    contact = Contact(email="bo@example.org", email_key="bo@example.org")
    db.session.add_all([mailing, contact])
    db.session.flush()
    row = Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                    response="sent", message_id="r117.k3j2@example.com", handed_off_at=NOW)
    db.session.add(row)
    db.session.flush()
    totals.bump(mailing.id, {"response:sent": 1, "handed_off": 1})
    db.session.commit()
    return row


def sample(name: str, rid: int) -> bytes:
    return (SAMPLES / name).read_bytes().replace(b"TOKEN", recipient_token(rid).encode())


@pytest.mark.parametrize(("name", "kind", "reason", "permanent", "response", "valid"), [
    ("multi-recipient-dsn.eml", "hard_bounce", "user_unknown", True, "hard_bounce", False),
    ("postfix-blocklisted.eml", "blocked", "blocked", False, "blocked", True),
    ("sendmail-generic-status-dmarc.eml", "blocked", "sender", False, "blocked", True),
    ("gmail-over-quota.eml", "soft_bounce", "mailbox_full", False, "soft_bounce", True),
    ("postfix-delayed-mailbox-full.eml", "deferred", "mailbox_full", False, "sent", True),
    ("auto-reply.eml", "auto_reply", "auto_reply", False, "sent", True),
    ("delivered-dsn.eml", "delivered_report", "delivered", False, "sent", True),
])
def test_bounce_mail_into_events(recipient, name, kind, reason, permanent, response, valid):
    bounce = to_event(sample(name, recipient.id), now=NOW)
    event = bounce.event
    assert event is not None and event.recipient_id == recipient.id
    assert (event.kind, event.detail["reason"], event.detail["permanent"]) == (
        kind, reason, permanent)
    apply_events([event])
    row = db.session.get(Recipient, recipient.id)
    assert row.response == response
    assert db.session.get(Contact, recipient.contact_id).valid is valid
    entries = timeline(recipient.id)
    assert [(e.kind, e.detail["reason"]) for e in entries] == [(kind, reason)]


def test_the_verdict_about_our_recipient_is_chosen_from_several(recipient):
    event = to_event(sample("multi-recipient-dsn.eml", recipient.id), now=NOW).event
    assert event.detail["final_recipient"] == "bo@example.org"
    assert event.detail["recipients_in_report"] == 3


def test_a_complaint_without_a_feedback_report(recipient):
    event = to_event(sample("jmrp-complaint.eml", recipient.id), now=NOW).event
    assert event.kind == "spam" and event.detail["reason"] == "complaint"
    apply_events([event])
    assert db.session.get(Contact, recipient.contact_id).do_not_email is True

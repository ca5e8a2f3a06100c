"""Send again to non-openers (people only) or to the deferred and soft-bounced: a linked draft
whose audience is a snapshot taken at creation, and the normal eligibility checks at send time."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Contact, Mailing, Recipient, Suppression, TypeOptOut
from app.services import mailings
from tests.factories import make_audience, make_mailing, responses_of, run_worker

# (response, opens, machine opens, clicks, machine clicks) per recipient of the parent.
PARENT = [
    ("opened", 1, 0, 0, 0),       # user0: a person opened it
    ("opened", 2, 2, 0, 0),       # user1: only a privacy proxy opened it: a non-opener
    ("soft_bounce", 0, 0, 0, 0),  # user2
    ("deferred", 0, 0, 0, 0),     # user3
    ("delivered", 0, 0, 0, 0),    # user4: a non-opener
    ("clicked", 1, 0, 1, 0),      # user5: a person clicked
    ("delivered", 0, 0, 1, 1),    # user6: only a link scanner clicked: a non-opener
    ("hard_bounce", 0, 0, 0, 0),  # user7
]


def _sent_parent() -> Mailing:
    parent = make_mailing([make_audience(len(PARENT))])
    parent.status = Status.SENT.value
    parent.started_at = parent.finished_at = datetime.now(UTC)
    db.session.flush()
    contacts = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    for contact, (response, opens, m_opens, clicks, m_clicks) in zip(contacts, PARENT,
                                                                     strict=True):
        db.session.add(Recipient(
            mailing_id=parent.id, contact_id=contact.id, address=contact.email,
            response=response, opens=opens, machine_opens=m_opens, clicks=clicks,
            machine_clicks=m_clicks,
            handed_off_at=None if response == "deferred" else datetime.now(UTC)))
    db.session.commit()
    return parent


def _addresses(mailing: Mailing) -> set[str]:
    return set(db.session.execute(
        select(Recipient.address).where(Recipient.mailing_id == mailing.id)).scalars())


def test_non_openers_are_people_who_did_not_open_machine_opens_left_out(app):
    parent = _sent_parent()
    again = mailings.resend(parent, "non_openers", owner_id=None, subject="Did you see this?")
    db.session.commit()
    assert again.status == Status.DRAFT.value and again.resend_of_id == parent.id
    assert again.resend_audience == "non_openers"
    assert again.subject == "Did you see this?" and again.html_body == parent.html_body
    assert again.text_body == parent.text_body and again.from_address == parent.from_address
    assert _addresses(again) == {"user1@example.org", "user4@example.org", "user6@example.org"}
    assert mailings.resend_size(again) == 3
    assert mailings.list_ids(again) == []


def test_deferred_and_soft_bounced(app):
    parent = _sent_parent()
    again = mailings.resend(parent, "deferred_soft", owner_id=None)
    assert again.subject == parent.subject
    assert _addresses(again) == {"user2@example.org", "user3@example.org"}


def test_the_audience_is_a_snapshot_taken_at_creation(app):
    parent = _sent_parent()
    again = mailings.resend(parent, "non_openers", owner_id=None)
    db.session.commit()
    # user4 opens the original afterwards: the resend's audience does not change.
    row = db.session.execute(select(Recipient).where(
        Recipient.mailing_id == parent.id, Recipient.address == "user4@example.org")).scalar_one()
    row.opens, row.response = 1, "opened"
    db.session.commit()
    assert mailings.resend_preview(again) == {"planned": 3}
    mailings.update_content(again, list_ids=[1], subject="Edited")  # lists never apply to it
    assert mailings.list_ids(again) == [] and mailings.resend_size(again) == 3


def test_resend_reaches_nobody_do_not_email_unsubscribed_or_suppressed(app, redis_conn,
                                                                        smtp):  # noqa: F811
    parent = _sent_parent()
    again = mailings.resend(parent, "non_openers", owner_id=None)
    db.session.commit()
    # After the snapshot: user1 unsubscribes (do not email), user6 leaves the mailing's email
    # type, and user4's address lands on the suppression list.
    from app.models import EmailType

    kind = EmailType(name="Offers")
    db.session.add(kind)
    db.session.flush()
    again.email_type_id = kind.id
    contacts = {c.email: c for c in db.session.execute(select(Contact)).scalars()}
    contacts["user1@example.org"].do_not_email = True
    contacts["user1@example.org"].do_not_email_reason = "unsubscribed"
    db.session.add(TypeOptOut(contact_id=contacts["user6@example.org"].id,
                              email_type_id=kind.id))
    db.session.add(Suppression(email_hash=mailings.email_hash("User4@Example.org")))
    db.session.commit()
    preview = mailings.resend_preview(again)
    assert preview == {"do_not_email": 2, "type_unsubscribed": 1}  # the page's count: nobody
    mailings.send_now(again)
    run_worker(redis_conn)
    db.session.refresh(again)
    assert again.status == Status.SENT.value
    assert responses_of(again) == Counter({"do_not_email": 2, "type_unsubscribed": 1})
    assert smtp.handler.messages == []


def test_an_erased_contact_leaves_the_snapshot(app, redis_conn, smtp):  # noqa: F811
    parent = _sent_parent()
    again = mailings.resend(parent, "deferred_soft", owner_id=None)
    db.session.commit()
    erased = db.session.execute(
        select(Contact).where(Contact.email == "user2@example.org")).scalar_one()
    db.session.delete(erased)
    db.session.add(Suppression(email_hash=mailings.email_hash("user2@example.org")))
    db.session.commit()
    mailings.send_now(again)
    run_worker(redis_conn)
    assert responses_of(again) == Counter({"sent": 1})
    assert [m.rcpt for m in smtp.handler.messages] == [["user3@example.org"]]


def test_only_a_sent_mailing_with_someone_to_resend_to(app):
    parent = make_mailing([make_audience(1)])
    with pytest.raises(mailings.MailingError, match="Only a sent mailing"):
        mailings.resend(parent, "non_openers", owner_id=None)
    parent.status = Status.SENT.value
    with pytest.raises(mailings.MailingError, match="send again to whom"):
        mailings.resend(parent, "everyone", owner_id=None)
    with pytest.raises(mailings.MailingError, match="Nobody to send again to"):
        mailings.resend(parent, "non_openers", owner_id=None)


def test_resend_from_the_page(app, auth, client):
    auth.login()
    parent = _sent_parent()
    page = client.get(f"/mailings/{parent.id}").get_data(as_text=True)
    assert "Send again to non-openers" in page
    answer = client.post(f"/mailings/{parent.id}/resend",
                         data={"audience": "non_openers", "subject": "Second try"})
    assert answer.status_code == 302
    again = db.session.execute(select(Mailing).where(Mailing.resend_of_id == parent.id)
                               ).scalar_one()
    assert answer.headers["Location"].endswith(f"/mailings/{again.id}")
    page = client.get(f"/mailings/{again.id}").get_data(as_text=True)
    assert 'data-testid="resend-size">3<' in page and 'data-testid="resend-eligible">3<' in page
    # Bad input: no 500, nothing created.
    for data in ({"audience": "all", "subject": "x"}, {"audience": "non_openers", "subject": ""}):
        assert client.post(f"/mailings/{parent.id}/resend", data=data).status_code == 302
    assert db.session.query(Mailing).filter_by(resend_of_id=parent.id).count() == 1
    auth.logout()
    auth.login("viewer@example.org", role="viewer")
    assert "Send again to non-openers" not in client.get(
        f"/mailings/{parent.id}").get_data(as_text=True)
    assert client.post(f"/mailings/{parent.id}/resend",
                       data={"audience": "non_openers", "subject": "x"}).status_code == 403

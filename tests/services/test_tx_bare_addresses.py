"""A bare address (no contact) remembers its hard bounces and complaints on the suppression list:
the next transactional email to it is refused, and a contact created at it later starts do not
email. Erased addresses keep their own, stronger rule."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from app.domain.responses import Response
from app.domain.transactional import Refusal
from app.extensions import db
from app.models import Contact, Mailing, Recipient, Suppression
from app.redis_conn import QUEUE_NAMES
from app.services import contacts, suppressions
from app.services import transactional as tx
from app.services.responses import apply_event as _apply_event

RECEIPT = dict(subject="Receipt {{ order }}", text="Order {{ order }}",
               from_address="shop@shop.example", from_name="Shop")


def apply_event(recipient_id: int, **values) -> None:
    """An event applied and committed, as the tracking and webhook views do."""
    _apply_event(recipient_id, **values)
    db.session.commit()


def run_every_queue(redis_conn) -> None:
    SimpleWorker(list(QUEUE_NAMES), connection=redis_conn).work(burst=True)


def send(**values) -> tx.TxResult:
    values.setdefault("data", {"order": "1"})
    result = tx.send(tx.TxRequest(**{**RECEIPT, **values}))
    db.session.commit()
    return result


def refusal_of(**values) -> tx.TxError:
    values.setdefault("data", {"order": "1"})
    with pytest.raises(tx.TxError) as caught:
        tx.send(tx.TxRequest(**{**RECEIPT, **values}))
    db.session.rollback()
    return caught.value


def sha(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def listed() -> dict[str, str]:
    return dict(db.session.execute(select(Suppression.email_hash, Suppression.reason)).all())


def count(model: type) -> int:
    return int(db.session.execute(select(func.count()).select_from(model)).scalar_one())


def sent_to(address: str, redis_conn, **values) -> Recipient:
    result = send(email=address, **values)
    run_every_queue(redis_conn)
    recipient = db.session.get(Recipient, result.recipient.id)
    assert recipient.contact_id is None and recipient.response == Response.SENT.value
    return recipient


def test_hard_bounce_of_a_bare_address_refuses_the_next_message(app, redis_conn, smtp):
    recipient = sent_to("Kim@Example.NET", redis_conn, data={"order": "1"})
    apply_event(recipient.id, kind="hard_bounce", source="generic", occurred_at=datetime.now(UTC))
    assert listed() == {sha("kim@example.net"): "hard_bounce"}

    before = (count(Mailing), count(Recipient))
    e = refusal_of(email=" kim@EXAMPLE.net ", data={"order": "2"})
    assert e.refusal is Refusal.DO_NOT_EMAIL and e.field == "to.email"
    assert "do not email (hard bounce)" in str(e)
    assert (count(Mailing), count(Recipient)) == before
    assert len(smtp.handler.messages) == 1
    # Another bare address is not affected.
    assert send(email="lee@example.net", data={"order": "3"}).status == "queued"


def test_complaint_of_a_bare_address_refuses_and_a_later_hard_bounce_is_the_reason(
        app, redis_conn, smtp):
    first = sent_to("moe@example.net", redis_conn, data={"order": "1"})
    second = sent_to("moe@example.net", redis_conn, data={"order": "2"})
    apply_event(first.id, kind="spam", source="generic", occurred_at=datetime.now(UTC))
    assert listed() == {sha("moe@example.net"): "complaint"}
    e = refusal_of(email="moe@example.net")
    assert e.refusal is Refusal.DO_NOT_EMAIL and "(spam complaint)" in str(e)

    # The earlier message's hard bounce arrives later: it is the stronger reason.
    apply_event(second.id, kind="hard_bounce", source="generic", occurred_at=datetime.now(UTC))
    assert listed() == {sha("moe@example.net"): "hard_bounce"}
    # A complaint afterwards does not weaken it.
    apply_event(second.id, kind="spam", source="generic", occurred_at=datetime.now(UTC))
    assert listed() == {sha("moe@example.net"): "hard_bounce"}


def test_hard_bounce_after_an_open_says_nothing_about_the_address(app, redis_conn, smtp):
    recipient = sent_to("ola@example.net", redis_conn)
    apply_event(recipient.id, kind="open", source="tracking", occurred_at=datetime.now(UTC))
    apply_event(recipient.id, kind="hard_bounce", source="generic", occurred_at=datetime.now(UTC))
    assert listed() == {}  # as for a contact: a forwarding artefact, the message arrived
    assert send(email="ola@example.net").status == "queued"


def test_soft_bounce_of_a_bare_address_is_not_remembered(app, redis_conn, smtp):
    recipient = sent_to("pat@example.net", redis_conn)
    apply_event(recipient.id, kind="soft_bounce", source="generic", occurred_at=datetime.now(UTC))
    assert listed() == {}


def test_erasure_is_stronger_than_a_bounce_and_never_weakened(app):
    suppressions.remember({"a@example.org": "complaint", "b@example.org": "hard_bounce"})
    suppressions.suppress("a@example.org")  # erased since
    suppressions.suppress("c@example.org")
    suppressions.remember({"c@example.org": "hard_bounce", "erased": "hard_bounce"})
    db.session.commit()
    assert listed() == {sha("a@example.org"): "erased", sha("b@example.org"): "hard_bounce",
                        sha("c@example.org"): "erased"}
    assert suppressions.erased_keys(["a@example.org", "b@example.org", "c@example.org"]) == {
        "a@example.org", "c@example.org"}
    e = refusal_of(email="c@example.org")
    assert e.refusal is Refusal.SUPPRESSED


def test_import_brings_a_bounced_address_back_as_do_not_email_not_an_erased_one(app):
    suppressions.remember({"hb@example.org": "hard_bounce", "sc@example.org": "complaint"})
    suppressions.suppress("gone@example.org")
    db.session.commit()
    known = Contact(email="ok@example.org", email_key="ok@example.org")
    db.session.add(known)
    db.session.commit()

    result = contacts.import_csv(io.BytesIO(
        b"email,name\nHB@example.org,Hal\nsc@example.org,Sue\ngone@example.org,Gus\n"
        b"ok@example.org,Oki\nnew@example.org,Ned\n"), list_name="Shop")
    assert (result.created, result.updated, result.rejected) == (3, 1, 1)
    assert "erased" in result.errors[0].reason and result.errors[0].line == 4
    db.session.expire_all()
    state = {c.email_key: (c.name, c.do_not_email, c.do_not_email_reason, c.valid, c.invalid_reason)
             for c in db.session.execute(select(Contact)).scalars()}
    assert state == {
        "hb@example.org": ("Hal", True, "hard bounce", False, "hard bounce"),
        "sc@example.org": ("Sue", True, "spam complaint", True, ""),
        "ok@example.org": ("Oki", False, "", True, ""),
        "new@example.org": ("Ned", False, "", True, ""),
    }
    # A contact's own flags decide for it: the contact is refused as do not email, and once
    # staff lift the flag (the person asked, the mailbox works again) it may be mailed.
    hb = contacts.find_contact("hb@example.org")
    e = refusal_of(email="hb@example.org")
    assert e.refusal is Refusal.DO_NOT_EMAIL and "(hard bounce)" in str(e)
    sc = contacts.find_contact("sc@example.org")
    sc.do_not_email, sc.do_not_email_reason = False, ""
    sc.last_transaction_at = datetime.now(UTC)
    db.session.commit()
    assert send(email="sc@example.org").recipient.contact_id == sc.id
    assert hb is not None

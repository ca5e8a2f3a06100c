"""List-Unsubscribe with one-click (RFC 8058) on bulk mail, none on an email type marked
transactional: a mail client's one-click unsubscribe would mark the contact do not email for
everything, receipts included."""

from __future__ import annotations

import email
from datetime import UTC, datetime

import pytest
from rq import SimpleWorker
from sqlalchemy import select

from app.extensions import db
from app.models import Contact, EmailType, Mailing, MailingVersion, Recipient
from app.redis_conn import QUEUE_NAMES
from app.services import mailings, reports
from app.services import transactional as tx
from app.services.history import rebuild_message
from app.services.rendering import MessageBuilder
from tests.factories import make_audience, make_mailing


def run_every_queue(redis_conn) -> None:
    SimpleWorker(list(QUEUE_NAMES), connection=redis_conn).work(burst=True)


def email_type(name: str, transactional: bool) -> EmailType:
    row = EmailType(name=name, transactional=transactional)
    db.session.add(row)
    db.session.commit()
    return row


def headers_of(data: bytes) -> dict[str, str | None]:
    msg = email.message_from_bytes(data)
    return {"List-Unsubscribe": msg["List-Unsubscribe"],
            "List-Unsubscribe-Post": msg["List-Unsubscribe-Post"]}


def content(**values) -> dict:
    return {"subject": "S", "html": "", "text": "T {{ unsubscribe_url }}", "from": "a@b.example",
            "reply_to": "", "base_url": "https://sb.example", "bounce_domain": "bounce.example",
            "boundary": "b", "domain": "b.example", **values}


def test_builder_leaves_the_headers_out_for_a_transactional_type_only():
    sent_at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    bulk = MessageBuilder(content()).build(merge={}, address="x@example.org", token="tok",
                                           message_id="m@b.example", sent_at=sent_at)
    assert headers_of(bulk.data) == {
        "List-Unsubscribe": "<https://sb.example/u/tok>, "
                            "<mailto:bounce+tok@bounce.example?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    receipt = MessageBuilder(content(transactional=True)).build(
        merge={}, address="x@example.org", token="tok", message_id="m@b.example", sent_at=sent_at)
    assert headers_of(receipt.data) == {"List-Unsubscribe": None, "List-Unsubscribe-Post": None}
    # The body's own link to the unsubscribe page stays: a person may still choose there.
    assert b"https://sb.example/u/tok" in receipt.data
    # Nothing else differs.
    kept = b"".join(line for line in bulk.data.splitlines(keepends=True)
                    if not line.startswith(b"List-Unsubscribe"))
    assert kept == receipt.data


def test_transactional_email_of_a_transactional_type_has_no_one_click(app, redis_conn, smtp):
    receipts = email_type("Receipts", transactional=True)
    offers = email_type("Offers", transactional=False)
    ana = Contact(email="ana@example.org", email_key="ana@example.org",
                  last_transaction_at=datetime.now(UTC))
    db.session.add(ana)
    db.session.commit()
    sent = {}
    for name, type_id in (("receipt", receipts.id), ("offer", offers.id), ("untyped", None)):
        result = tx.send(tx.TxRequest(contact_id=ana.id, email_type_id=type_id,
                                      subject=f"{name} {{{{ order }}}}", text="Thanks",
                                      html="<p>Thanks</p>",
                                      from_address="shop@shop.example", data={"order": "1"}))
        db.session.commit()
        sent[name] = result.recipient.id
    run_every_queue(redis_conn)
    by_subject = {email.message_from_bytes(m.data)["Subject"].split()[0]: m.data
                  for m in smtp.handler.messages}
    assert sorted(by_subject) == ["offer", "receipt", "untyped"]
    assert headers_of(by_subject["receipt"]) == {"List-Unsubscribe": None,
                                                 "List-Unsubscribe-Post": None}
    for name in ("offer", "untyped"):
        assert headers_of(by_subject[name])["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The frozen version says so, so the message rebuilds byte for byte.
    for name, rid in sent.items():
        recipient = db.session.get(Recipient, rid)
        assert rebuild_message(recipient) == by_subject[name]
    version = db.session.execute(select(MailingVersion).join(
        Mailing, Mailing.id == MailingVersion.mailing_id).where(
        Mailing.email_type_id == receipts.id)).scalar_one()
    assert version.content["transactional"] is True


@pytest.mark.parametrize(("transactional", "post"), [(False, "List-Unsubscribe=One-Click"),
                                                      (True, None)])
def test_bulk_mailing_keeps_one_click_unless_its_type_is_transactional(
        app, redis_conn, smtp, transactional, post):
    kind = email_type("Service notices" if transactional else "News", transactional)
    mailing = make_mailing([make_audience(2)], email_type_id=kind.id)
    mailings.send_now(mailing)
    db.session.commit()
    run_every_queue(redis_conn)
    assert len(smtp.handler.messages) == 2
    assert [headers_of(m.data)["List-Unsubscribe-Post"] for m in smtp.handler.messages] == [post] * 2
    assert all((headers_of(m.data)["List-Unsubscribe"] is None) is transactional
               for m in smtp.handler.messages)


@pytest.mark.parametrize("transactional", [False, True])
def test_test_send_has_the_headers_exactly_when_the_real_send_does(app, redis_conn, smtp,
                                                                   transactional):
    """A test send is built as the real send is for the mailing's email type: no List-Unsubscribe
    for a type marked transactional, both headers otherwise."""
    kind = email_type("Service notices" if transactional else "News", transactional)
    mailing = make_mailing([make_audience(1)], email_type_id=kind.id)
    reports.send_test(mailing, "staff@example.org", "Staff")
    [tested] = [m for m in smtp.handler.messages if m.rcpt == ["staff@example.org"]]
    base, bounces = app.config["BASE_URL"], app.config["BOUNCE_DOMAIN"]
    expected = ({"List-Unsubscribe": None, "List-Unsubscribe-Post": None} if transactional else
                {"List-Unsubscribe": f"<{base}/u/test>, "
                                     f"<mailto:bounce+test@{bounces}?subject=unsubscribe>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    assert headers_of(tested.data) == expected
    assert email.message_from_bytes(tested.data)["Subject"].startswith("[Test] ")
    mailings.send_now(mailing)
    db.session.commit()
    run_every_queue(redis_conn)
    [real] = [m for m in smtp.handler.messages if m.rcpt != ["staff@example.org"]]
    assert {k: v is None for k, v in headers_of(real.data).items()} == {
        k: v is None for k, v in headers_of(tested.data).items()}

"""The sending engine against a real Redis, a real RQ worker and a real SMTP server."""

from __future__ import annotations

import email
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import (
    Contact,
    EmailType,
    ListMember,
    Mailing,
    Recipient,
    SendBatch,
    TypeOptOut,
)
from app.services import mailings, sending, totals
from app.services.ledger import Ledger
from tests.factories import make_audience, make_mailing, responses_of, run_worker
from tests.smtp_server import SmtpServer


def test_send_now_delivers_every_eligible_recipient_once(app, redis_conn, smtp):
    app.config["BATCH_SIZE"] = 7
    mailing = make_mailing([make_audience(30)])
    mailings.send_now(mailing)
    assert mailing.status == Status.PREPARING.value
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert mailing.started_at is not None and mailing.finished_at is not None
    assert responses_of(mailing) == Counter({"sent": 30})
    received = smtp.by_recipient()
    assert len(received) == 30 and all(len(v) == 1 for v in received.values())
    counters = totals.get(mailing.id)
    assert counters["handed_off"] == 30 and counters["eligible"] == 30
    assert counters["response:sent"] == 30 and counters.get("response:planned", 0) == 0
    # More than one batch was needed, and every batch was closed.
    batches = db.session.execute(select(SendBatch.state, SendBatch.size)).all()
    assert len(batches) == 5 and {s for s, _ in batches} == {"done"}
    assert max(size for _, size in batches) == 7


def test_message_has_headers_tracking_and_both_parts(app, redis_conn, smtp):
    mailing = make_mailing([make_audience(1)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    raw = smtp.handler.messages[0]
    msg = email.message_from_bytes(raw.data)
    recipient = db.session.execute(select(Recipient)).scalar_one()
    assert msg["Message-ID"] == f"<{recipient.message_id}>"
    assert msg["Subject"] == "Hi User 0"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in msg["List-Unsubscribe"]
    assert raw.mail_from.startswith("bounce+") and raw.mail_from.endswith(
        app.config["BOUNCE_DOMAIN"])
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk()
             if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    html = parts["text/html"]
    assert "Hello User 0" in html and "/t/o/" in html
    assert "https://example.org/offer" not in html  # rewritten to the click endpoint
    assert "/t/c/" in html
    assert "Unsubscribe" in html and html.count("/u/") == 1  # unsubscribe link not tracked
    assert "Hello User 0" in parts["text/plain"]


def test_exact_message_can_be_rebuilt_byte_for_byte(app, redis_conn, smtp):
    from app.services.history import rebuild_message

    mailing = make_mailing([make_audience(3)], subject="Ahoj {{ name }} – ☃")
    mailings.send_now(mailing)
    run_worker(redis_conn)
    # The contact changes afterwards: the stored message must not.
    for c in db.session.execute(select(Contact)).scalars():
        c.name = "Renamed"
    db.session.commit()
    by_rcpt = smtp.by_recipient()
    for recipient in db.session.execute(select(Recipient)).scalars():
        assert rebuild_message(recipient) == by_rcpt[recipient.address][0].data


def test_eligibility_rules_become_visible_responses(app, redis_conn, smtp):
    newsletter = EmailType(name="Newsletter")
    db.session.add(newsletter)
    first = make_audience(6, list_name="A")
    second = make_audience(0, list_name="B")
    contacts = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    db.session.add(ListMember(list_id=second.id, contact_id=contacts[0].id))  # duplicate
    contacts[1].do_not_email = True
    db.session.add(TypeOptOut(contact_id=contacts[2].id, email_type_id=newsletter.id or 1))
    contacts[3].valid = False
    contacts[4].last_transaction_at = datetime.now(UTC) - timedelta(days=800)
    contacts[4].created_at = datetime.now(UTC) - timedelta(days=900)
    db.session.commit()
    mailing = make_mailing([first, second], email_type_id=newsletter.id)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({
        "sent": 2, "duplicate": 1, "do_not_email": 1, "type_unsubscribed": 1,
        "invalid_address": 1, "inactive": 1,
    })
    assert set(smtp.by_recipient()) == {contacts[0].email, contacts[5].email}
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value


def test_unsubscribe_during_sending_is_honoured_before_hand_off(app, redis_conn, smtp):
    mailing = make_mailing([make_audience(4)])
    mailings.send_now(mailing)
    # Prepare only; then the contact leaves before the batch is sent.
    from jobs.sending import prepare_mailing

    prepare_mailing(mailing.id)
    contact = db.session.execute(select(Contact).order_by(Contact.id)).scalars().first()
    contact.do_not_email = True
    db.session.commit()
    run_worker(redis_conn)
    assert contact.email not in smtp.by_recipient()
    assert responses_of(mailing)["do_not_email"] == 1


def test_permanent_refusal_is_recorded_and_sending_goes_on(app, redis_conn, smtp):
    smtp.handler.refuse["user1@example.org"] = "550 5.1.1 No such user"
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 2, "hard_bounce": 1})
    bounced = db.session.execute(
        select(Contact).where(Contact.email == "user1@example.org")).scalar_one()
    assert bounced.do_not_email and not bounced.valid
    assert totals.get(mailing.id)["hard_bounces"] == 1


def test_template_error_for_one_contact_is_a_delivery_error(app, redis_conn, smtp):
    lst = make_audience(3)
    contact = db.session.execute(select(Contact).order_by(Contact.id)).scalars().first()
    contact.fields = {"n": "not a number"}
    db.session.commit()
    mailing = make_mailing([lst], html_body="",
                           text_body="Total {{ n + 1 if n is defined else 0 }} {{ unsubscribe_url }}")
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"sent": 2, "delivery_error": 1})
    detail = db.session.execute(
        select(Recipient.detail).where(Recipient.response == "delivery_error")).scalar_one()
    assert "render failed" in detail


def test_template_that_cannot_compile_is_refused_at_save(app):
    with pytest.raises(mailings.MailingError, match="line 1"):
        make_mailing([make_audience(1)], html_body="<p>{{ name </p>")


def test_empty_eligible_audience_finishes_as_sent(app, redis_conn, smtp):
    lst = make_audience(2)
    for c in db.session.execute(select(Contact)).scalars():
        c.do_not_email = True
    db.session.commit()
    mailing = make_mailing([lst])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"do_not_email": 2})
    assert not smtp.handler.messages


def test_smtp_outage_interrupts_and_resume_completes_without_duplicates(app, redis_conn, smtp, monkeypatch):
    monkeypatch.setattr(sending.batch, "RECONNECT_BACKOFF", (0.05,))
    app.config["OUTAGE_MINUTES"] = 0.01  # interrupted after 0.6 s of nothing but failures
    app.config["BATCH_SIZE"] = 5
    mailing = make_mailing([make_audience(20)])
    port = smtp.port
    smtp.stop()
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert "cannot connect" in mailing.status_reason
    assert responses_of(mailing) == Counter({"planned": 20})
    restarted = SmtpServer(port).start()
    try:
        mailings.resume(mailing)
        run_worker(redis_conn)
        db.session.refresh(mailing)
        assert mailing.status == Status.SENT.value
        assert responses_of(mailing) == Counter({"sent": 20})
        assert all(len(v) == 1 for v in restarted.by_recipient().values())
        assert len(restarted.by_recipient()) == 20
    finally:
        restarted.stop()


def test_cancel_stops_a_batch_within_a_second_and_lists_the_rest(app, redis_conn, smtp):
    app.config["BATCH_SIZE"] = 1000
    smtp.handler.delay = 0.02  # 50 messages a second: the batch would take 8 s
    mailing = make_mailing([make_audience(400)])
    mailing_id = mailing.id
    mailings.send_now(mailing)
    timings: dict[str, float] = {}

    def cancel_soon() -> None:
        deadline = time.monotonic() + 20
        while len(smtp.handler.messages) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        with app.app_context():
            timings["canceled"] = time.monotonic()
            timings["sent_at_cancel"] = len(smtp.handler.messages)
            mailings.cancel(db.session.get(Mailing, mailing_id))
            db.session.remove()

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    run_worker(redis_conn)  # the worker must run in the main thread (RQ uses signals)
    finished = time.monotonic()
    canceller.join()
    db.session.expire_all()
    mailing = db.session.get(Mailing, mailing_id)
    assert mailing.status == Status.CANCELED.value
    counts = responses_of(mailing)
    assert counts["sent"] == len(smtp.handler.messages)
    # About a second: no more than ~1 s of messages left after the cancel, far from the batch end.
    assert len(smtp.handler.messages) - timings["sent_at_cancel"] <= 60
    assert finished - timings["canceled"] < 5
    assert counts["canceled"] == 400 - counts["sent"] and counts["canceled"] > 200
    not_sent = mailings.not_sent_recipients(mailing.id, limit=1000)
    assert len(not_sent) == counts["canceled"]


def test_quota_exhausted_interrupts(app, redis_conn, smtp):
    app.config["MONTHLY_QUOTA"] = 5
    app.config["BATCH_SIZE"] = 3
    mailing = make_mailing([make_audience(8)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert "quota" in mailing.status_reason
    assert responses_of(mailing) == Counter({"sent": 5, "planned": 3})


def test_send_until_deadline_stops_the_rest_as_expired(app, redis_conn, smtp):
    mailing = make_mailing([make_audience(4)])
    mailings.send_now(mailing)
    from jobs.sending import prepare_mailing

    prepare_mailing(mailing.id)
    mailing = db.session.get(Mailing, mailing.id)
    mailing.send_until = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"expired": 4})


def test_bounce_threshold_interrupts(app, redis_conn, smtp):
    app.config["THRESHOLD_MIN_SAMPLE"] = 5
    app.config["BOUNCE_RATE_LIMIT"] = 0.2
    app.config["BATCH_SIZE"] = 5
    for i in range(3):
        smtp.handler.refuse[f"user{i}@example.org"] = "550 5.1.1 No such user"
    mailing = make_mailing([make_audience(20)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert "bounce rate" in mailing.status_reason
    assert responses_of(mailing)["planned"] == 15


def test_mailings_are_served_in_queue_order(app, redis_conn, smtp):
    app.config["BATCH_SIZE"] = 2
    first = make_mailing([make_audience(4, list_name="L1")])
    second = mailings.create(owner_id=first.owner_id, name="Second",
                             list_ids=[make_audience(4, list_name="L2", start=100).id],
                             subject="S", from_address="a@shop.example",
                             text_body="x {{ unsubscribe_url }}")
    mailings.send_now(first)
    mailings.send_now(second)
    run_worker(redis_conn)
    order = [m.rcpt[0] for m in smtp.handler.messages]
    assert order[:4] == [f"user{i}@example.org" for i in range(4)]
    assert set(order[4:]) == {f"user{i}@example.org" for i in range(100, 104)}


def test_crashed_batch_is_settled_from_the_ledger(app, redis_conn, smtp):
    mailing = make_mailing([make_audience(5)])
    mailings.send_now(mailing)
    from jobs.sending import prepare_mailing

    prepare_mailing(mailing.id)
    claim = sending.claim_batch(redis_conn, worker="dead")
    assert claim is not None and claim.size == 5
    ids = db.session.execute(
        select(Recipient.id).where(Recipient.batch_id == claim.batch_id).order_by(Recipient.id)
    ).scalars().all()
    ledger = Ledger(redis_conn, claim.batch_id)
    stamp = int(time.time())
    ledger.append(f"h:{ids[0]}", f"s:{ids[0]}:{stamp}:m0@x", f"h:{ids[1]}")
    redis_conn.delete(f"sb:alive:{claim.batch_id}")  # the worker's heartbeat stopped
    assert sending.settle_abandoned(redis_conn) == 1
    rows = dict(db.session.execute(
        select(Recipient.id, Recipient.response).where(Recipient.mailing_id == mailing.id)
    ).all())
    assert rows[ids[0]] == "sent" and rows[ids[1]] == "unknown"
    assert [rows[i] for i in ids[2:]] == ["planned"] * 3
    # A sender still holding the batch is fenced off: it cannot append any more.
    from app.services.ledger import LedgerRefused

    with pytest.raises(LedgerRefused):
        ledger.append(f"h:{ids[2]}")
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"sent": 4, "unknown": 1})
    assert set(smtp.by_recipient()) == {f"user{i}@example.org" for i in range(2, 5)}
    unknown = db.session.execute(
        select(Recipient).where(Recipient.response == Response.UNKNOWN.value)).scalar_one()
    assert unknown.crash_unknown


def test_lost_ledger_makes_the_whole_batch_unknown(app, redis_conn, smtp):
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    from jobs.sending import prepare_mailing

    prepare_mailing(mailing.id)
    claim = sending.claim_batch(redis_conn, worker="dead")
    assert claim is not None
    batch = db.session.get(SendBatch, claim.batch_id)
    batch.claimed_at = datetime.now(UTC) - timedelta(minutes=5)
    db.session.commit()
    redis_conn.flushall()  # Redis lost everything, the worker died too
    assert sending.settle_abandoned(redis_conn) == 1
    assert responses_of(mailing) == Counter({"unknown": 3})
    sending.finish_if_done(mailing.id)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value


def test_without_prevent_duplicates_each_membership_is_sent(app, redis_conn, smtp):
    first = make_audience(2, list_name="A")
    second = make_audience(0, list_name="B")
    contact = db.session.execute(select(Contact).order_by(Contact.id)).scalars().first()
    db.session.add(ListMember(list_id=second.id, contact_id=contact.id))
    db.session.commit()
    mailing = make_mailing([first, second], prevent_duplicates=False)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"sent": 3})
    assert len(smtp.by_recipient()[contact.email]) == 2


def test_a_segment_audience_is_chosen_when_the_mailing_is_prepared(app, redis_conn, smtp):
    """The segment picks contacts by rule at preparation: a contact that matches only after the
    mailing was saved receives it, one that stopped matching does not."""
    from app.domain.segments import parse
    from app.services import segments

    make_audience(6)
    rule = parse({"match": "any", "conditions": [
        {"subject": "email", "op": "starts_with", "value": "user1"},
        {"subject": "field", "key": "tier", "op": "equals", "value": "gold"}]})
    segment = segments.create_segment("Gold or user1", rule)
    mailing = make_mailing([segment])
    for address, fields in (("user2@example.org", {"tier": "Gold"}),
                            ("user1@example.org", {})):
        db.session.execute(db.update(Contact).where(Contact.email == address)
                           .values(fields=fields))
    db.session.execute(db.update(Contact).where(Contact.email == "user1@example.org")
                       .values(email="left@example.org", email_key="left@example.org"))
    db.session.commit()
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert set(smtp.by_recipient()) == {"user2@example.org"}
    assert responses_of(mailing) == Counter({"sent": 1})


def test_a_slow_hand_off_keeps_its_batch_alive(app, redis_conn, smtp, monkeypatch):
    """A relay that takes longer to accept one message than a batch may go without a heartbeat:
    the reconciler, running all along, must not take the batch from its live worker (it would
    record the message in flight as Unknown and the worker's result would be lost)."""
    import threading

    from app.services import ledger
    from jobs.sending import prepare_mailing

    monkeypatch.setattr(ledger, "ALIVE_TTL", 1)
    monkeypatch.setattr(sending.batch, "HEARTBEAT_EVERY", 0.2)
    smtp.handler.delay = 2.5  # each DATA takes 2.5 s, the alive mark lasts 1 s
    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    prepare_mailing(mailing.id)
    claim = sending.claim_batch(redis_conn, worker="slow")
    outcome = {}

    def send() -> None:
        with app.app_context():
            outcome["result"] = sending.send_claim(redis_conn, claim)

    sender = threading.Thread(target=send)
    sender.start()
    settled = 0
    while sender.is_alive():
        settled += sending.settle_abandoned(redis_conn)
        time.sleep(0.3)
    sender.join()
    assert settled == 0 and outcome["result"].stop is None
    db.session.expire_all()
    assert responses_of(mailing) == Counter({"sent": 2})
    assert len(smtp.by_recipient()) == 2
    # Once the worker is done, nothing keeps the mark alive.
    time.sleep(1.2)
    assert not ledger.is_alive(redis_conn, claim.batch_id)


def test_international_domains_and_hostile_names_are_written_safely(app, redis_conn, smtp):
    """An address with an international domain is delivered to its IDNA form; a line break in a
    contact's name (a quoted CSV cell can carry one) cannot start a header of its own."""
    lst = make_audience(1)
    now = datetime.now(UTC)
    for address, name in (("anna@bücher.de", "Anna"),
                          ("eve@example.org", "Eve\r\nBcc: victim@evil.example")):
        contact = Contact(email=address, email_key=address, name=name, last_transaction_at=now)
        db.session.add(contact)
        db.session.flush()
        db.session.add(ListMember(list_id=lst.id, contact_id=contact.id))
    db.session.commit()
    mailing = make_mailing([lst], reply_to="help@bücher.de")
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 3})
    received = smtp.by_recipient()
    assert set(received) == {"user0@example.org", "anna@xn--bcher-kva.de", "eve@example.org"}
    anna = email.message_from_bytes(received["anna@xn--bcher-kva.de"][0].data)
    assert anna["To"] == "Anna <anna@xn--bcher-kva.de>"
    assert anna["Reply-To"] == "help@xn--bcher-kva.de"
    eve = email.message_from_bytes(received["eve@example.org"][0].data)
    assert eve["Bcc"] is None and "victim@evil.example" in eve["To"]
    assert eve["To"] == '"Eve Bcc: victim@evil.example" <eve@example.org>'
    assert all(r.rcpt == [addr] for addr, rs in received.items() for r in rs)


def test_a_batch_goes_out_over_several_connections_at_once(app, redis_conn, smtp):
    """One worker, one batch, the relay's connections all busy at the same time; every recipient
    gets exactly one copy."""
    from app.models import Provider

    app.config["BATCH_SIZE"] = 500
    db.session.add(Provider(name="Sink", host="127.0.0.1", port=smtp.port, connections=3,
                            is_default=True))
    smtp.handler.pause = 0.01  # each DATA takes 10 ms without holding up the other connections
    mailing = make_mailing([make_audience(90)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 90})
    received = smtp.by_recipient()
    assert len(received) == 90 and all(len(v) == 1 for v in received.values())
    assert db.session.execute(select(func.count()).select_from(SendBatch)).scalar_one() == 1
    per_connection = Counter(m.peer for m in smtp.handler.messages)
    assert len(per_connection) == 3 and sum(per_connection.values()) == 90
    assert min(per_connection.values()) >= 10  # each connection carried its share
    assert smtp.handler.most_at_once >= 2  # in DATA at the same time, not one after the other
    assert totals.get(mailing.id)["handed_off"] == 90


def test_an_unreachable_relay_is_tried_until_the_outage_window_then_interrupts(
        app, redis_conn, smtp, monkeypatch):
    """Connection refused on every try: the recipients stay Planned (never Unknown, never a
    bounce) and the mailing is interrupted only after the outage window of nothing but failures,
    not after a few tries."""
    from app.providers.smtp import SmtpTransport
    from tests.smtp_server import free_port

    monkeypatch.setattr(sending.batch, "RECONNECT_BACKOFF", (0.05, 0.1))
    app.config["OUTAGE_MINUTES"] = 0.03  # 1.8 s
    app.config["SMTP_CONNECTIONS"] = 3
    app.config["CAPTURE_SMTP_PORT"] = free_port()  # nobody listens there
    tries = []
    original = SmtpTransport.open

    def open_(self):  # type: ignore[no-untyped-def]
        tries.append(time.monotonic())
        original(self)

    monkeypatch.setattr(SmtpTransport, "open", open_)
    mailing = make_mailing([make_audience(30)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert "could not be used for" in mailing.status_reason
    assert "cannot connect" in mailing.status_reason
    assert responses_of(mailing) == Counter({"planned": 30})
    assert totals.get(mailing.id).get("handed_off", 0) == 0
    assert db.session.execute(select(func.count()).select_from(Recipient).where(
        Recipient.batch_id.is_not(None))).scalar_one() == 0  # all back in the queue
    # Tried again and again over the whole window, on every connection.
    assert len(tries) >= 15 and tries[-1] - tries[0] >= 1.8 * 0.9


def test_a_connection_lost_during_data_costs_only_its_own_message(app, redis_conn, smtp):
    """The relay hangs up in the middle of one message's DATA: that recipient is Unknown (it may
    have arrived; never sent again), the connection opens again and the batch goes on."""
    from dataclasses import dataclass

    from tests.smtp_server import Handler

    @dataclass
    class HangUp(Handler):
        async def handle_DATA(self, server, session, envelope):
            if envelope.rcpt_tos == ["user5@example.org"] and not getattr(self, "hung", False):
                self.hung = True
                server.transport.close()  # no reply to this DATA
                return "421 closing"
            return await super().handle_DATA(server, session, envelope)

    smtp.stop()
    smtp.handler = HangUp()
    smtp.start()
    app.config["SMTP_CONNECTIONS"] = 2
    mailing = make_mailing([make_audience(40)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 39, "unknown": 1})
    lost = db.session.execute(
        select(Recipient).where(Recipient.response == Response.UNKNOWN.value)).scalar_one()
    assert lost.address == "user5@example.org" and lost.crash_unknown
    assert "connection lost" in lost.detail
    received = smtp.by_recipient()
    assert "user5@example.org" not in received
    assert len(received) == 39 and all(len(v) == 1 for v in received.values())


def test_the_rate_limit_holds_across_connections(app, redis_conn, smtp, monkeypatch):
    """Four connections share one messages-per-second limit: no second of the limiter's window
    lets more than the limit through."""
    from app.providers.rate import RateLimiter

    app.config["SMTP_RATE_PER_SECOND"] = 15
    app.config["SMTP_CONNECTIONS"] = 4
    admitted: list[tuple[float, str]] = []
    original = RateLimiter.wait

    def wait(self):  # type: ignore[no-untyped-def]
        original(self)
        import threading

        admitted.append((time.time(), threading.current_thread().name))

    monkeypatch.setattr(RateLimiter, "wait", wait)
    mailing = make_mailing([make_audience(48)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"sent": 48})
    assert len({name for _, name in admitted}) == 4  # every connection sent
    per_window = Counter(int(at) for at, _ in admitted)
    assert max(per_window.values()) <= 15 and len(per_window) >= 3


def test_redis_failing_right_after_a_250_keeps_that_message_sent(app, redis_conn, smtp,
                                                                 monkeypatch):
    """The server accepted a message, then Redis fails in the bookkeeping that follows: the batch
    stops, but that message is recorded Sent, never handed off again."""
    from redis.exceptions import RedisError

    calls = []

    def clear(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise RedisError("Connection closed by server.")

    from jobs.enqueue import kick_sending

    monkeypatch.setattr(sending.batch._Refusing, "clear", clear)
    app.config["SMTP_CONNECTIONS"] = 2
    mailing = make_mailing([make_audience(24)])
    mailings.send_now(mailing)
    run_worker(redis_conn)  # the batch stops at the failure; its successor sends the rest
    kick_sending()
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 24})
    received = smtp.by_recipient()
    assert len(received) == 24 and all(len(v) == 1 for v in received.values())
    assert db.session.execute(select(func.count()).select_from(SendBatch)).scalar_one() >= 2

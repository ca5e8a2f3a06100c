"""Recovery of a batch whose worker died: the ledger's entries read back as written, a refusal
settles as what the server answered, and partial flushes bound what a lost ledger leaves in doubt.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Recipient, SendBatch
from app.services import ledger, mailings, sending, totals
from app.services.ledger import Ledger, handing_off_entry, refused_entry, sent_entry
from jobs.enqueue import kick_sending
from jobs.sending import prepare_mailing
from tests.factories import make_audience, make_mailing, responses_of, run_worker
from tests.smtp_server import Handler, SmtpServer

AT = datetime(2026, 11, 30, 9, 30, 5, tzinfo=UTC)


# ---------------------------------------------------------------- the entries, both ways


def test_every_entry_reads_back_as_written() -> None:
    record = ledger.read([
        "b",
        handing_off_entry(1), sent_entry(1, AT, "<1.abc@shop.example>"),
        handing_off_entry(2), refused_entry(2, Response.HARD_BOUNCE, "550 5.1.1 no: such user"),
        handing_off_entry(3), refused_entry(3, Response.SOFT_BOUNCE, "452 4.2.2 mailbox full"),
        handing_off_entry(4),
    ])
    assert not record.lost
    assert record.sent == {1: ("<1.abc@shop.example>", AT)}
    assert record.refused == {2: (Response.HARD_BOUNCE, "550 5.1.1 no: such user"),
                              3: (Response.SOFT_BOUNCE, "452 4.2.2 mailbox full")}
    assert record.ambiguous == {4}


def test_refusals_without_a_response_and_an_empty_record() -> None:
    # Written before refusals carried their response: still refused, never Unknown.
    record = ledger.read(["b", "h:7", "r:7", "h:8", "r:8:sent:250 odd", "h:9", "r:9:bogus:x"])
    assert record.ambiguous == set()
    assert record.refused == {7: (Response.DELIVERY_ERROR, "refused by the SMTP server"),
                              8: (Response.DELIVERY_ERROR, "250 odd"),
                              9: (Response.DELIVERY_ERROR, "x")}
    assert ledger.read([]).lost
    long = refused_entry(5, Response.BLOCKED, "554 " + "x" * 2000)
    assert len(ledger.read(["b", long]).refused[5][1]) == ledger.REPLY_LIMIT


# ---------------------------------------------------------------- settling from the ledger


def _claimed(n: int, redis_conn):
    mailing = make_mailing([make_audience(n)])
    mailings.send_now(mailing)
    prepare_mailing(mailing.id)
    claim = sending.claim_batch(redis_conn, worker="dead")
    assert claim is not None and claim.size == n
    ids = db.session.execute(
        select(Recipient.id).where(Recipient.batch_id == claim.batch_id).order_by(Recipient.id)
    ).scalars().all()
    return mailing, claim, ids


def _responses(ids: list[int]) -> list[str]:
    db.session.expire_all()
    by_id = dict(db.session.execute(
        select(Recipient.id, Recipient.response).where(Recipient.id.in_(ids))).all())
    return [by_id[i] for i in ids]


def test_a_refused_recipient_of_a_crashed_batch_settles_as_refused(app, redis_conn) -> None:
    mailing, claim, ids = _claimed(5, redis_conn)
    Ledger(redis_conn, claim.batch_id).append(
        handing_off_entry(ids[0]), sent_entry(ids[0], AT, "<m0@shop.example>"),
        handing_off_entry(ids[1]),
        refused_entry(ids[1], Response.HARD_BOUNCE, "550 5.1.1 user unknown"),
        handing_off_entry(ids[2]),
        refused_entry(ids[2], Response.SOFT_BOUNCE, "451 4.3.0 try later"),
        handing_off_entry(ids[3]),
    )
    redis_conn.delete(f"sb:alive:{claim.batch_id}")  # the worker died
    assert sending.settle_abandoned(redis_conn) == 1
    assert _responses(ids) == ["sent", "hard_bounce", "soft_bounce", "unknown", "planned"]
    rows = {r.id: r for r in db.session.scalars(select(Recipient).where(Recipient.id.in_(ids)))}
    assert rows[ids[0]].message_id == "<m0@shop.example>" and rows[ids[0]].handed_off_at == AT
    assert rows[ids[1]].detail == "550 5.1.1 user unknown" and not rows[ids[1]].crash_unknown
    assert rows[ids[2]].detail == "451 4.3.0 try later"
    assert rows[ids[3]].crash_unknown
    assert rows[ids[4]].batch_id is None  # back in the queue
    contact = db.session.get(Contact, rows[ids[1]].contact_id)
    assert contact.do_not_email and not contact.valid  # as a hard bounce at hand-off does
    counters = totals.get(mailing.id)
    assert counters["refused"] == 2 and counters["hard_bounces"] == 1
    assert counters["soft_bounces"] == 1 and counters["handed_off"] == 1
    assert counters["response:planned"] == 1 and counters["response:unknown"] == 1


def test_a_partial_flush_after_the_settle_records_nothing(app, redis_conn) -> None:
    mailing, claim, ids = _claimed(3, redis_conn)
    Ledger(redis_conn, claim.batch_id).append(handing_off_entry(ids[0]))
    redis_conn.delete(f"sb:alive:{claim.batch_id}")
    assert sending.settle_abandoned(redis_conn) == 1  # ids[0] in flight: Unknown
    outcome = sending.BatchOutcome()
    outcome.sent[ids[0]] = ("<m0@x>", AT, {})  # the sender, still running, got its 250 late
    before = totals.get(mailing.id)
    assert sending.flush_progress(claim, outcome, 1, reach=3) is False
    assert _responses(ids) == ["unknown", "planned", "planned"]
    assert totals.get(mailing.id) == before
    assert db.session.get(SendBatch, claim.batch_id).state == "settled"


def test_a_lost_ledger_leaves_in_doubt_only_what_is_past_the_last_partial_flush(
        app, redis_conn) -> None:
    mailing, claim, ids = _claimed(8, redis_conn)
    outcome = sending.BatchOutcome()
    outcome.sent[ids[0]] = ("<m0@x>", AT, {})
    outcome.final[ids[1]] = (Response.HARD_BOUNCE, "550 5.1.1 gone")
    outcome.refused = 1
    outcome.sent[ids[2]] = ("<m2@x>", AT, {})
    # Recorded so far: ids[0..2]; the sender may go up to position 5 before its next flush.
    assert sending.flush_progress(claim, outcome, 1, reach=5) is True
    assert _responses(ids[:3]) == ["sent", "hard_bounce", "sent"]
    outcome.sent[ids[3]] = ("<m3@x>", AT, {})  # sent after the flush, then Redis and worker die
    db.session.execute(update(SendBatch).where(SendBatch.id == claim.batch_id)
                       .values(claimed_at=datetime.now(UTC) - timedelta(minutes=2)))
    db.session.commit()
    redis_conn.flushall()
    assert sending.settle_abandoned(redis_conn) == 1
    # Positions 3 and 4 may have been handed off: Unknown. 5, 6 and 7 were never tried.
    assert _responses(ids) == ["sent", "hard_bounce", "sent", "unknown", "unknown",
                               "planned", "planned", "planned"]
    assert db.session.execute(select(Recipient.id).where(
        Recipient.batch_id.is_(None), Recipient.mailing_id == mailing.id)
    ).scalars().all() == ids[5:]
    counters = totals.get(mailing.id)
    assert counters["handed_off"] == 2 and counters["refused"] == 1
    assert counters["response:sent"] == 2 and counters["response:unknown"] == 2
    assert counters["response:planned"] == 3
    # A later final flush of the same sender records nothing twice (the batch is settled).
    assert sending.flush(None, claim, outcome, 1) is False


# ---------------------------------------------------------------- a sender stuck mid-hand-off


@dataclass
class GateHandler(Handler):
    """Holds the DATA of message number `hold_at` until `gate` is set."""

    hold_at: int = -1
    held: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server, session, envelope):
        if len(self.messages) == self.hold_at:
            self.held.set()
            self.gate.wait(15)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def gated_smtp(app):
    server = SmtpServer(handler=GateHandler(delay=0.01, hold_at=25)).start()
    app.config["CAPTURE_SMTP_PORT"] = server.port
    app.config["SMTP_HOST"] = ""
    sending.close_connections()
    yield server
    server.handler.gate.set()
    sending.close_connections()
    server.stop()


def test_a_sender_that_dies_with_its_ledger_leaves_about_one_flush_window_unknown(
        app, redis_conn, gated_smtp, monkeypatch) -> None:
    monkeypatch.setattr(sending.batch, "PROGRESS_EVERY", 0.05)
    monkeypatch.setattr(sending.batch, "WINDOW_MIN", 2)
    monkeypatch.setattr(sending.claim.Pace, "window", 2)
    monkeypatch.setattr(sending.batch, "HEARTBEAT_EVERY", 3600)  # this sender's batch lapses
    app.config["SMTP_CONNECTIONS"] = 4
    mailing, claim, ids = _claimed(40, redis_conn)
    result = {}

    def send() -> None:
        with app.app_context():
            result["outcome"] = sending.send_claim(redis_conn, claim)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert gated_smtp.handler.held.wait(30), "the sender never reached message 26"
        time.sleep(0.2)
        reach = db.session.execute(
            select(SendBatch.handoff_reach).where(SendBatch.id == claim.batch_id)).scalar_one()
        recorded = _responses(ids).count("sent")
        assert 15 <= recorded <= 25 and recorded < reach <= 40
        # Redis loses everything while the sender hangs in message 26's DATA, as if it had died.
        db.session.execute(update(SendBatch).where(SendBatch.id == claim.batch_id)
                           .values(claimed_at=datetime.now(UTC) - timedelta(minutes=2)))
        db.session.commit()
        redis_conn.flushall()
        assert sending.settle_abandoned(redis_conn) == 1
        after = Counter(_responses(ids))
        # In doubt: what was handed off or may be by the bound, past the last partial flush.
        # Message 26 (position 25) was handed off, so the bound lies past it; a few rows only.
        assert reach >= 26 and after["unknown"] == reach - recorded <= 10
        assert after["sent"] == recorded and after["planned"] == 40 - reach
    finally:
        gated_smtp.handler.gate.set()  # message 26 is accepted after all...
        sender.join(30)
    assert result["outcome"].stop == "fenced"  # ...and the sender stops without recording it
    # Each of the other connections had at most its own message under way: no more left after.
    assert 26 <= len(gated_smtp.handler.messages) <= 25 + 4
    kick_sending()
    run_worker(redis_conn)
    final = responses_of(mailing)
    received = gated_smtp.by_recipient()
    assert all(len(v) == 1 for v in received.values())  # nobody got a second copy
    assert final["sent"] + final["unknown"] == 40 and final["unknown"] == reach - recorded
    db.session.expire_all()
    addresses = dict(db.session.execute(
        select(Recipient.address, Recipient.response).where(Recipient.mailing_id == mailing.id)
    ).all())
    sent = {a for a, r in addresses.items() if r == "sent"}
    assert sent <= set(received) and set(received) - sent <= {
        a for a, r in addresses.items() if r == "unknown"}


def test_a_batch_steps_aside_between_messages_and_the_rest_goes_back(
        app, redis_conn, smtp) -> None:  # noqa: F811
    mailing, claim, ids = _claimed(10, redis_conn)
    asked = []

    def step_aside() -> bool:
        asked.append(1)
        return len(asked) == 2  # the second check (about 0.2 s in) finds a periodic job waiting

    smtp.handler.delay = 0.05
    outcome = sending.send_claim(redis_conn, claim, step_aside=step_aside)
    assert outcome.stop == "yield" and 0 < len(outcome.sent) < 10
    responses = _responses(ids)
    assert responses == ["sent"] * len(outcome.sent) + ["planned"] * (10 - len(outcome.sent))
    assert db.session.get(SendBatch, claim.batch_id).state == "done"
    back = db.session.execute(select(Recipient.id).where(
        Recipient.mailing_id == mailing.id, Recipient.batch_id.is_(None))).scalars().all()
    assert back == ids[len(outcome.sent):]
    assert len(smtp.by_recipient()) == len(outcome.sent)

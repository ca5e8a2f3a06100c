"""Refusals at hand-off go through the bounce classifier: only a bad address is a hard bounce."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from app.extensions import db
from app.models import Contact, Recipient
from app.services import mailings, totals
from tests.factories import make_audience, make_mailing, responses_of, run_worker


def test_refusals_at_hand_off_by_reason(app, redis_conn, smtp):  # noqa: F811
    smtp.handler.refuse["user0@example.org"] = "550 5.1.1 <user0@example.org>: Recipient " \
        "address rejected: User unknown in local recipient table"
    smtp.handler.refuse["user1@example.org"] = "554 5.7.1 Service unavailable; Client host " \
        "[192.0.2.10] blocked using zen.spamhaus.org"
    smtp.handler.refuse["user2@example.org"] = "552 5.2.2 Mailbox full"
    mailing = make_mailing([make_audience(4)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"sent": 1, "hard_bounce": 1, "blocked": 1,
                                             "soft_bounce": 1})
    flags = {c.email: (c.valid, c.do_not_email) for c in
             db.session.execute(select(Contact)).scalars()}
    assert flags["user0@example.org"] == (False, True)  # the address is bad
    assert flags["user1@example.org"] == (True, False)  # our IP was refused: contact untouched
    assert flags["user2@example.org"] == (True, False)
    counters = totals.get(mailing.id)
    assert (counters["hard_bounces"], counters["blocked"], counters["soft_bounces"]) == (1, 1, 1)
    detail = db.session.execute(select(Recipient.detail).where(
        Recipient.address == "user1@example.org")).scalar_one()
    assert "zen.spamhaus.org" in detail

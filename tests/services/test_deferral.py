"""Deferral: a recipient the SMTP server refuses for now (4xx) waits, visible as Deferred, for its
next attempt on a backoff, and is sent once in the end; or becomes a Soft bounce past the maximum
age. The mailing keeps sending while any recipient is deferred. A crash settles a deferred one as
Deferred, and a relay refusing everything for minutes interrupts the mailing."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from app.domain import figures
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Mailing, Recipient
from app.services import mailings, sending, settings, totals
from app.services.ledger import Ledger
from jobs.enqueue import kick_sending
from tests.factories import assert_counters_match_rows, make_audience, make_mailing, rows_of, run_worker


def recipient(address: str) -> Recipient:
    db.session.expire_all()
    return db.session.execute(
        select(Recipient).where(Recipient.address == address)).scalar_one()


def make_due(mailing_id: int) -> None:
    """Time passes: every deferred recipient is due for its next attempt."""
    db.session.execute(update(Recipient).where(
        Recipient.mailing_id == mailing_id, Recipient.response == Response.DEFERRED.value)
        .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    db.session.commit()


def send_again(redis_conn) -> None:
    kick_sending()
    run_worker(redis_conn)


def test_a_temporary_refusal_defers_then_the_retry_sends_exactly_one_copy(
        app, auth, client, redis_conn, smtp):  # noqa: F811
    auth.login()
    smtp.handler.defer["user1@example.org"] = 1
    mailing = make_mailing([make_audience(4)])
    mailing_id = mailing.id
    mailings.send_now(mailing)
    before = datetime.now(UTC)
    run_worker(redis_conn)

    db.session.refresh(mailing)
    assert mailing.status == Status.SENDING.value  # one recipient still waits
    deferred = recipient("user1@example.org")
    assert deferred.response == Response.DEFERRED.value
    assert deferred.detail.startswith("451 4.3.0")
    assert deferred.attempts == 1
    assert deferred.first_deferred_at is not None and deferred.first_deferred_at >= before
    # The first retry comes a minute later (the first step of the backoff).
    wait = deferred.next_attempt_at - deferred.first_deferred_at
    assert timedelta(seconds=59) <= wait <= timedelta(seconds=61)
    assert sending.deferred_summary(mailing_id) == (1, deferred.next_attempt_at)
    assert rows_of(mailing_id) == Counter({"sent": 3, "deferred": 1})
    assert_counters_match_rows(mailing_id)
    page_figures = figures.figures(totals.get(mailing_id))
    assert (page_figures.waiting, page_figures.sent) == (1, 3)
    page = client.get(f"/mailings/{mailing_id}").get_data(as_text=True)
    retry_at = deferred.next_attempt_at.astimezone(UTC).strftime("%H:%M")
    assert f'data-figure="progress-deferred">1</span> deferred, next retry at {retry_at} UTC' in page

    send_again(redis_conn)  # not due yet: nothing is tried
    assert smtp.handler.attempts["user1@example.org"] == 1
    assert not sending.deferred_due()

    make_due(mailing_id)
    assert sending.deferred_due()
    send_again(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert rows_of(mailing_id) == Counter({"sent": 4})
    assert_counters_match_rows(mailing_id)
    assert {a: len(m) for a, m in smtp.by_recipient().items()} == {
        f"user{i}@example.org": 1 for i in range(4)}
    assert smtp.handler.attempts["user1@example.org"] == 2


def test_refusals_past_the_maximum_age_end_as_a_soft_bounce_with_the_last_reply(
        app, redis_conn, smtp):  # noqa: F811
    smtp.handler.defer["user0@example.org"] = 99
    smtp.handler.defer_reply = "452 4.2.2 Mailbox full"
    mailing = make_mailing([make_audience(2)])
    mailing_id = mailing.id
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert recipient("user0@example.org").response == Response.DEFERRED.value

    make_due(mailing_id)
    send_again(redis_conn)
    second = recipient("user0@example.org")
    assert (second.response, second.attempts) == (Response.DEFERRED.value, 2)
    assert second.next_attempt_at - datetime.now(UTC) > timedelta(minutes=4)  # 5 minutes later

    # A day after the first refusal (the default maximum age), the next refusal gives up.
    db.session.execute(update(Recipient).where(Recipient.id == second.id).values(
        first_deferred_at=datetime.now(UTC) - timedelta(hours=24, minutes=1)))
    db.session.commit()
    smtp.handler.defer_reply = "451 4.7.1 Greylisted, come back later"
    make_due(mailing_id)
    send_again(redis_conn)
    last = recipient("user0@example.org")
    assert last.response == Response.SOFT_BOUNCE.value
    assert last.detail.startswith("451 4.7.1 Greylisted")
    assert last.next_attempt_at is None
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert rows_of(mailing_id) == Counter({"sent": 1, "soft_bounce": 1})
    assert_counters_match_rows(mailing_id)
    assert smtp.handler.attempts["user0@example.org"] == 3
    assert not smtp.by_recipient().get("user0@example.org")


def test_a_shorter_maximum_age_setting_gives_up_sooner(app, redis_conn, smtp):  # noqa: F811
    settings.set("defer_max_hours", "0")
    smtp.handler.defer["user0@example.org"] = 1
    mailing = make_mailing([make_audience(1)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert recipient("user0@example.org").response == Response.SOFT_BOUNCE.value
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value


def test_a_closing_421_defers_and_the_next_message_reconnects(app, redis_conn, smtp):  # noqa: F811
    smtp.handler.defer["user1@example.org"] = 1
    smtp.handler.defer_reply = "421 4.7.0 Too many connections, closing"
    mailing = make_mailing([make_audience(3)])
    mailing_id = mailing.id
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert rows_of(mailing_id) == Counter({"sent": 2, "deferred": 1})
    assert recipient("user1@example.org").detail.startswith("421 4.7.0")
    make_due(mailing_id)
    send_again(redis_conn)
    assert rows_of(mailing_id) == Counter({"sent": 3})
    assert all(len(m) == 1 for m in smtp.by_recipient().values())


def test_a_crashed_batch_settles_a_deferred_recipient_as_deferred(app, redis_conn, smtp):  # noqa: F811
    mailing = make_mailing([make_audience(3)])
    mailing_id = mailing.id
    mailings.send_now(mailing)
    from jobs.sending import prepare_mailing

    prepare_mailing(mailing_id)
    claim = sending.claim_batch(redis_conn, worker="dead")
    assert claim is not None
    ids = db.session.execute(select(Recipient.id).where(Recipient.mailing_id == mailing_id)
                             .order_by(Recipient.id)).scalars().all()
    ledger = Ledger(redis_conn, claim.batch_id)
    ledger.append(f"h:{ids[0]}", f"r:{ids[0]}:deferred:451 4.3.0 Try later",
                  f"h:{ids[1]}", f"s:{ids[1]}:{int(time.time())}:m1@x")
    redis_conn.delete(f"sb:alive:{claim.batch_id}")
    assert sending.settle_abandoned(redis_conn) == 1
    first = db.session.get(Recipient, ids[0])
    db.session.refresh(first)
    assert first.response == Response.DEFERRED.value
    assert first.attempts == 1 and first.next_attempt_at is not None
    assert first.detail.startswith("451")
    assert rows_of(mailing_id) == Counter({"deferred": 1, "sent": 1, "planned": 1})
    assert_counters_match_rows(mailing_id)

    make_due(mailing_id)
    send_again(redis_conn)
    db.session.expire_all()
    assert rows_of(mailing_id) == Counter({"sent": 3})
    assert_counters_match_rows(mailing_id)
    # user1 was handed off by the dead worker (its 250 is in the ledger): never sent again.
    assert sorted(smtp.by_recipient()) == ["user0@example.org", "user2@example.org"]
    assert db.session.get(Mailing, mailing_id).status == Status.SENT.value


def test_only_a_relay_refusing_everything_for_minutes_interrupts(app, redis_conn, smtp):  # noqa: F811
    for i in range(6):
        smtp.handler.defer[f"user{i}@example.org"] = 99
    mailing = make_mailing([make_audience(6)])
    mailing_id = mailing.id
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    # Refused for now, but not for long: deferred, still sending.
    assert mailing.status == Status.SENDING.value
    assert rows_of(mailing_id) == Counter({"deferred": 6})

    # Every attempt on this relay has been refused for six minutes (the limit is five).
    redis_conn.set(sending.refusing_key(f"smtp:127.0.0.1:{smtp.port}"), time.time() - 360)
    make_due(mailing_id)
    send_again(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert "refused every message for now for 6 minutes" in mailing.status_reason
    assert_counters_match_rows(mailing_id)
    assert rows_of(mailing_id)["deferred"] == 6  # the one tried is deferred again, not lost


def test_an_accepted_message_ends_the_run_of_refusals(app, redis_conn, smtp):  # noqa: F811
    key = sending.refusing_key(f"smtp:127.0.0.1:{smtp.port}")
    redis_conn.set(key, time.time() - 360)
    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert not redis_conn.exists(key)


def test_a_slow_down_reply_halves_the_rate_then_it_grows_back(
        app, auth, client, redis_conn, smtp):  # noqa: F811
    from app.providers import rate

    auth.login()
    settings.set("rate_per_second", "100")
    smtp.handler.defer["user1@example.org"] = 1
    smtp.handler.defer_reply = "421 4.7.0 Too many connections from your host"
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    key = f"smtp:127.0.0.1:{smtp.port}"
    cut = rate.read_cut(redis_conn, key)
    assert cut is not None and (cut.floor, cut.before) == (50.0, 100.0)
    assert rate.current_rate(redis_conn, key, 100.0, now=cut.at) == 50.0
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)  # user1 still deferred
    # (the rate may have grown back one step if the page came more than 5 s after the cut)
    assert re.search(r"\b5[05]\.0 messages/s for now: the SMTP server asked to slow down", page)
    # One twentieth of the old rate back every five seconds, then the cut is forgotten.
    assert rate.current_rate(redis_conn, key, 100.0, now=cut.at + 5) == 55.0
    assert rate.current_rate(redis_conn, key, 100.0, now=cut.at + 49) == 95.0
    assert rate.current_rate(redis_conn, key, 100.0, now=cut.at + 50) == 100.0
    assert rate.read_cut(redis_conn, key) is None


def test_a_reply_that_is_not_about_pace_leaves_the_rate(app, redis_conn, smtp):  # noqa: F811
    from app.providers import rate

    settings.set("rate_per_second", "100")
    smtp.handler.defer["user1@example.org"] = 1  # 451 4.3.0 Temporary failure
    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert rate.read_cut(redis_conn, f"smtp:127.0.0.1:{smtp.port}") is None

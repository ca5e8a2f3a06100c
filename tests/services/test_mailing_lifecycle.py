"""Scheduling, the scheduler tick, chains, copy and delete, the rate limit, SMTP auth."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Mailing, Recipient
from app.services import chains, mailings, sending

# Fixtures used by name below.
from tests.factories import make_audience, make_mailing, responses_of, run_worker


def test_schedule_converts_local_time_and_refuses_a_dst_gap(app):
    mailing = make_mailing([make_audience(1)])
    with pytest.raises(mailings.MailingError, match="does not exist"):
        mailings.schedule(mailing, datetime(2031, 3, 30, 2, 30), "Europe/Prague")
    resolved = mailings.schedule(mailing, datetime(2031, 6, 2, 9, 0), "Europe/Prague")
    assert resolved.utc == datetime(2031, 6, 2, 7, 0, tzinfo=UTC)
    assert mailing.status == Status.SCHEDULED.value and mailing.send_at_zone == "Europe/Prague"


def test_schedule_locks_five_minutes_before(app):
    mailing = make_mailing([make_audience(1)])
    now = datetime.now(UTC)
    mailings.schedule(mailing, (now + timedelta(minutes=30)).replace(tzinfo=None), "UTC")
    inside = now + timedelta(minutes=26)
    assert mailings.locked(mailing, inside) and not mailings.locked(mailing, now)
    with pytest.raises(mailings.MailingError, match="locked"):
        mailings.schedule(mailing, (now + timedelta(hours=2)).replace(tzinfo=None), "UTC",
                          now=inside)
    # Cancel is how the user unlocks it: the mailing goes back to Draft, kept.
    mailings.cancel(mailing)
    assert mailing.status == Status.DRAFT.value and mailing.send_at is None
    mailings.update_content(mailing, subject="Edited")


def test_scheduler_tick_starts_a_due_mailing(app, redis_conn, smtp):  # noqa: F811
    from jobs.sending import tick

    mailing = make_mailing([make_audience(3)])
    mailings.schedule(mailing, (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None),
                      "UTC")
    db.session.commit()  # services leave the commit to their caller
    tick()
    assert mailing.status == Status.SCHEDULED.value
    mailing.send_at = datetime.now(UTC) - timedelta(seconds=1)  # the time has come
    db.session.commit()
    redis_conn.flushall()  # Redis knows nothing of it: the database is the source of truth
    tick()
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert len(smtp.handler.messages) == 3


def test_only_drafts_can_be_deleted_and_copies_are_new_drafts(app, redis_conn, smtp):  # noqa: F811
    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    with pytest.raises(mailings.MailingError, match="Only a draft"):
        mailings.delete_mailing(mailing)
    with pytest.raises(mailings.MailingError, match="no longer be edited"):
        mailings.update_content(mailing, subject="Too late")
    clone = mailings.copy(mailing, owner_id=mailing.owner_id)
    assert clone.status == Status.DRAFT.value and clone.subject == mailing.subject
    assert mailings.list_ids(clone) == mailings.list_ids(mailing)
    mailings.send_now(clone)
    run_worker(redis_conn)
    # The copy is a new mailing: its recipients get it although they had the original.
    assert len(smtp.handler.messages) == 4
    mailings.delete_mailing(mailings.copy(clone, owner_id=None))
    assert db.session.execute(select(Mailing).where(Mailing.status == "draft")).first() is None


def test_canceled_mailing_can_be_copied_and_sent_again(app, redis_conn, smtp):  # noqa: F811
    from jobs.sending import prepare_mailing

    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    prepare_mailing(mailing.id)
    mailings.cancel(db.session.get(Mailing, mailing.id))
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"canceled": 2})
    clone = mailings.copy(mailing, owner_id=None)
    mailings.send_now(clone)
    run_worker(redis_conn)
    assert responses_of(clone) == Counter({"sent": 2})


def test_chain_step_goes_to_openers_after_its_delay(app, redis_conn, smtp):  # noqa: F811
    parent = make_mailing([make_audience(4)])
    step = chains.add_step(parent, name="Follow-up", delay_days=3, condition="openers",
                           owner_id=None, subject="Again", from_address="news@shop.example",
                           text_body="Thanks for reading. Unsubscribe: {{ unsubscribe_url }}")
    mailings.send_now(parent)
    run_worker(redis_conn)
    db.session.refresh(step)
    assert step.status == Status.SCHEDULED.value
    assert step.send_at == parent.finished_at + timedelta(days=3)
    opener = db.session.execute(select(Recipient).order_by(Recipient.id)).scalars().first()
    opener.opens = 2
    step.send_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    from jobs.sending import tick

    tick()
    run_worker(redis_conn)
    db.session.refresh(step)
    assert step.status == Status.SENT.value
    assert [m.rcpt for m in smtp.handler.messages[4:]] == [[opener.address]]


def test_interrupted_step_sends_later_steps_back_to_draft(app):
    parent = make_mailing([make_audience(1)])
    first = chains.add_step(parent, name="1", delay_days=1, condition="all", owner_id=None)
    second = chains.add_step(first, name="2", delay_days=1, condition="all", owner_id=None)
    first.status = Status.SENDING.value
    second.status = Status.SCHEDULED.value
    second.send_at = datetime.now(UTC) + timedelta(days=2)
    db.session.commit()
    sending.interrupt(first.id, "test")
    db.session.refresh(second)
    assert second.status == Status.DRAFT.value and second.send_at is None
    # Deleting a step deletes the steps after it.
    first.status = Status.DRAFT.value
    db.session.commit()
    second_id = second.id
    mailings.delete_mailing(first)
    db.session.expunge_all()
    assert db.session.get(Mailing, second_id) is None


def test_rate_limit_is_honoured(app, redis_conn, smtp, monkeypatch):  # noqa: F811
    import time

    app.config["SMTP_RATE_PER_SECOND"] = 10
    admitted: list[float] = []
    original = sending.RateLimiter.wait

    def wait(self):  # type: ignore[no-untyped-def]
        original(self)
        admitted.append(time.time())  # when the limiter let a message go

    monkeypatch.setattr(sending.RateLimiter, "wait", wait)
    mailing = make_mailing([make_audience(25)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert responses_of(mailing) == Counter({"sent": 25})
    assert len(admitted) == 25 == len(smtp.handler.messages)
    # No one-second window of the limiter lets more than the limit through.
    per_window = Counter(int(t) for t in admitted)
    assert max(per_window.values()) <= 10
    assert len(per_window) >= 3 and admitted[-1] - admitted[0] > 1.0


def test_smtp_login_is_used_when_configured(app, redis_conn):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.smtp_server import Handler, free_port

    seen: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        assert isinstance(auth_data, LoginPassword)
        seen.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret")

    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_USERNAME="relay",
                          SMTP_PASSWORD="s3cret")
        sending._transports.clear()
        mailing = make_mailing([make_audience(2)])
        mailings.send_now(mailing)
        run_worker(redis_conn)
        assert responses_of(mailing) == Counter({"sent": 2})
        assert seen == [("relay", "s3cret")]  # one login: the connection is reused
        assert len(handler.messages) == 2
    finally:
        controller.stop()
        sending._transports.clear()

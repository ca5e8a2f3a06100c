"""A send job claims its next batch while the current one finishes (jobs/sending.py).

The batch claimed ahead may hand off nothing before its sender commits a real bound, so losing
its ledger leaves none of it in doubt; it is given back unsent when the batch before stopped or
its mailing left Sending; and the job's batches together send each recipient once.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Recipient, SendBatch
from app.services import mailings, sending
from app.services.sending.claim import NOT_STARTED
from jobs.sending import prepare_mailing
from tests.factories import make_audience, make_mailing, responses_of, run_worker


def _sending(n: int):
    mailing = make_mailing([make_audience(n)])
    mailings.send_now(mailing)
    prepare_mailing(mailing.id)
    return mailing


def test_a_batch_claimed_ahead_and_lost_with_redis_leaves_nobody_unknown(app, redis_conn) -> None:
    mailing = _sending(6)
    claim = sending.claim_batch(redis_conn, worker="dead", ahead=True)
    assert claim is not None and claim.reach == NOT_STARTED
    reach = db.session.scalar(select(SendBatch.handoff_reach)
                              .where(SendBatch.id == claim.batch_id))
    assert reach == NOT_STARTED
    # Its worker dies before the batch starts, and Redis loses every ledger.
    db.session.execute(update(SendBatch).where(SendBatch.id == claim.batch_id)
                       .values(claimed_at=datetime.now(UTC) - timedelta(minutes=2)))
    db.session.commit()
    redis_conn.flushall()
    assert sending.settle_abandoned(redis_conn) == 1
    db.session.expire_all()
    assert responses_of(mailing) == Counter({"planned": 6})  # all back in the queue
    assert db.session.scalar(select(Recipient.id).where(
        Recipient.mailing_id == mailing.id, Recipient.batch_id.is_not(None))) is None


def test_a_batch_claimed_ahead_commits_its_bound_before_its_first_message(
        app, redis_conn, smtp) -> None:
    mailing = _sending(4)
    claim = sending.claim_batch(redis_conn, worker="w", ahead=True)
    assert claim is not None
    outcome = sending.send_claim(redis_conn, claim)
    assert outcome.stop is None and len(outcome.sent) == 4
    assert claim.reach > 0
    db.session.expire_all()
    assert responses_of(mailing) == Counter({"sent": 4})
    assert len(smtp.handler.messages) == 4


def test_a_settled_batch_claimed_ahead_never_starts(app, redis_conn, smtp) -> None:
    mailing = _sending(4)
    claim = sending.claim_batch(redis_conn, worker="w", ahead=True)
    assert claim is not None
    db.session.execute(update(SendBatch).where(SendBatch.id == claim.batch_id)
                       .values(claimed_at=datetime.now(UTC) - timedelta(minutes=2)))
    db.session.commit()
    redis_conn.delete(f"sb:alive:{claim.batch_id}")  # it looked abandoned: the tick settles it
    assert sending.settle_abandoned(redis_conn) == 1
    outcome = sending.send_claim(redis_conn, claim)
    assert outcome.stop == "fenced" and not outcome.sent
    assert smtp.handler.messages == []
    db.session.expire_all()
    assert responses_of(mailing) == Counter({"planned": 4})


def test_one_job_sends_the_batches_it_claims_ahead_each_recipient_once(
        app, redis_conn, smtp) -> None:
    app.config["BATCH_SIZE"] = 5
    mailing = _sending(23)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 23})
    received = Counter(m.rcpt[0] for m in smtp.handler.messages)
    assert len(received) == 23 and set(received.values()) == {1}
    # Batches claimed ahead run in the job that claimed them: several batches share a job.
    jobs = Counter(w.split("/", 1)[1] for w in db.session.execute(
        select(SendBatch.worker).where(SendBatch.mailing_id == mailing.id)).scalars())
    assert sum(jobs.values()) == 5 and max(jobs.values()) >= 2


def test_the_batch_claimed_ahead_goes_back_when_its_mailing_is_interrupted(
        app, redis_conn, smtp) -> None:
    app.config["THRESHOLD_MIN_SAMPLE"] = 5
    app.config["BOUNCE_RATE_LIMIT"] = 0.2
    app.config["BATCH_SIZE"] = 5
    for i in range(3):
        smtp.handler.refuse[f"user{i}@example.org"] = "550 5.1.1 No such user"
    mailing = _sending(20)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    # The first batch passed the bounce threshold; the one claimed ahead sent nothing.
    assert len(smtp.handler.messages) == 2
    assert responses_of(mailing)["planned"] == 15
    batches = db.session.execute(select(SendBatch.state).where(
        SendBatch.mailing_id == mailing.id)).scalars().all()
    assert len(batches) == 2  # the second was claimed ahead, then given back
    assert db.session.scalar(select(Recipient.id).where(
        Recipient.mailing_id == mailing.id, Recipient.response == "planned",
        Recipient.batch_id.is_not(None))) is None

"""RQ job functions of the sending engine: ids in, services do the work, next step enqueued."""

from __future__ import annotations

import logging

from rq import get_current_job

from app.redis_conn import get_redis
from jobs.context import in_app_context

log = logging.getLogger("sendboard.jobs.sending")


@in_app_context
def prepare_mailing(mailing_id: int) -> None:
    """Materialise the audience and start sending."""
    from app.services import mailings
    from jobs.enqueue import kick_sending

    if mailings.prepare(mailing_id) is not None:
        kick_sending()


@in_app_context
def send_next_batch() -> int:
    """Claim and send one batch of the oldest sending mailing; enqueue the next job."""
    from app.services import sending
    from jobs import periodic
    from jobs.enqueue import kick_sending

    job = get_current_job()
    redis = get_redis()
    worker = f"{job.worker_name}/{job.id}" if job else "inline"
    claim = sending.claim_batch(redis, worker=worker)
    if claim is None:
        return 0
    kick_sending(successor=True)  # the next batch can start on another worker right away
    # Between messages the batch steps aside for a periodic job that waits (jobs/periodic.py).
    outcome = sending.send_claim(redis, claim, step_aside=lambda: periodic.should_yield(redis))
    log.info("batch %s of mailing %s: %d sent, %d not sent, stop=%s", claim.batch_id,
             claim.mailing_id, len(outcome.sent), len(outcome.final), outcome.stop)
    return len(outcome.sent)


@in_app_context
def deferred_due() -> bool:
    """Start sending again when a deferred recipient's next attempt is due."""
    from app.services import sending
    from jobs.enqueue import kick_sending

    if sending.deferred_due():
        kick_sending()
        return True
    return False


@in_app_context
def tick() -> None:
    """The scheduler tick: start due mailings, settle abandoned batches, keep sending going."""
    from sqlalchemy import select

    from app.domain.lifecycle import Status
    from app.extensions import db
    from app.models import Mailing
    from app.services import mailings, sending
    from jobs.enqueue import kick_sending, prepare

    redis = get_redis()
    for mailing_id in mailings.start_due():
        prepare(mailing_id)
    # A Preparing mailing whose job was lost (Redis restart) is prepared again.
    for mailing_id in db.session.execute(
        select(Mailing.id).where(Mailing.status == Status.PREPARING.value)
    ).scalars().all():
        prepare(mailing_id)
    sending.settle_abandoned(redis)
    for mailing_id in sending.sending_queue():
        sending.finish_if_done(mailing_id)
    if sending.has_work():
        kick_sending()

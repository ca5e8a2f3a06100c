"""RQ job functions of the sending engine: ids in, services do the work, next step enqueued."""

from __future__ import annotations

import logging
import time

from rq import get_current_job

from app.redis_conn import get_redis
from jobs.context import in_app_context

log = logging.getLogger("sendboard.jobs.sending")

CONTINUE_FOR = 30.0  # seconds one send job goes on to batches it claimed ahead


@in_app_context
def prepare_mailing(mailing_id: int) -> None:
    """Materialise the audience and start sending."""
    from app.services import mailings
    from jobs.enqueue import kick_sending

    if mailings.prepare(mailing_id) is not None:
        kick_sending()


@in_app_context
def send_next_batch() -> int:
    """Claim and send batches of the oldest sending mailing; enqueue the next job.

    While a batch's last half second of messages goes out, the job claims and loads the next
    batch (`prefetch`), and sends it right after, so the connections wait less between batches.
    It does so for at most CONTINUE_FOR seconds and not under a monthly quota. A batch claimed
    ahead is given back unsent when the batch before stopped (a cancel, a step aside for periodic
    work, an outage) or its mailing is no longer Sending (a threshold interrupted it).
    """
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
    started = time.monotonic()
    loaded: sending.Loaded | None = None
    sent = 0
    while True:
        ahead: list[sending.Loaded] = []

        def prefetch(ahead: list[sending.Loaded] = ahead) -> None:
            nxt = sending.claim_batch(redis, worker=worker, ahead=True)
            if nxt is not None:
                ahead.append(sending.load_claim(nxt))
                kick_sending()  # one waiting job per live worker, no more

        # Not with a monthly quota: it is counted when outcomes are recorded, so a batch
        # claimed ahead could pass it.
        go_on = (time.monotonic() - started < CONTINUE_FOR
                 and not (claim.config is not None and claim.config.monthly_quota))
        # Between messages the batch steps aside for a periodic job that waits (jobs/periodic.py).
        outcome = sending.send_claim(redis, claim, step_aside=lambda: periodic.should_yield(redis),
                                     loaded=loaded, prefetch=prefetch if go_on else None)
        log.info("batch %s of mailing %s: %d sent, %d not sent, stop=%s", claim.batch_id,
                 claim.mailing_id, len(outcome.sent), len(outcome.final), outcome.stop)
        sent += len(outcome.sent)
        if not ahead:
            return sent
        loaded = ahead[0]
        claim = loaded.claim
        # The batch before may have interrupted its mailing (a threshold passed), or a cancel
        # came: then the batch claimed ahead goes back unsent.
        if outcome.stop is not None or not sending.still_sending(claim.mailing_id):
            sending.release_claim(redis, loaded)
            return sent


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

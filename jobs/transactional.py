"""Transactional emails: one job per message on the ``transactional`` queue, which workers take
before the bulk ``sending`` queue (app.redis_conn.QUEUE_NAMES), so a receipt never waits behind
a mailing to a million. The message itself is handed off by the sending engine like any other;
should this job be lost (Redis restart), the mailing is still Sending at the head of the queue
and the next send job or scheduler tick takes it.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import Queue, get_current_job

from app.redis_conn import get_redis
from jobs.context import in_app_context

log = logging.getLogger("sendboard.jobs.transactional")

QUEUE = "transactional"


def enqueue(mailing_id: int) -> None:
    """Queue the sending of a transactional mailing (one job id per mailing)."""
    try:
        Queue(QUEUE, connection=get_redis()).enqueue(
            "jobs.transactional.send_transactional", mailing_id, job_id=f"tx-{mailing_id}",
            job_timeout=600, result_ttl=60, failure_ttl=24 * 3600)
    except (RedisError, RuntimeError) as exc:
        log.warning("transactional mailing %s not enqueued now: %s", mailing_id, exc)


@in_app_context
def send_transactional(mailing_id: int) -> int:
    """Claim and hand off the mailing's message; returns how many were sent (0 or 1)."""
    from app.services import sending

    job = get_current_job()
    redis = get_redis()
    worker = f"{job.worker_name}/{job.id}" if job else "inline"
    claim = sending.claim_batch(redis, worker=worker, only=mailing_id)
    if claim is None:
        return 0  # already taken by a send job, or not sending any more
    outcome = sending.send_claim(redis, claim)
    log.info("transactional mailing %s: %d sent, %d not sent, stop=%s", mailing_id,
             len(outcome.sent), len(outcome.final), outcome.stop)
    return len(outcome.sent)

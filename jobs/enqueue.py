"""Enqueueing sending work. Views and services call these; the jobs live in jobs/sending.py."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from app.redis_conn import get_redis

log = logging.getLogger("sendboard.enqueue")

SEND_JOB_TIMEOUT = 3600  # a 20,000-recipient batch through a slow relay still fits


def _queue() -> Queue:
    return Queue("sending", connection=get_redis())


_OVER = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED}


def prepare(mailing_id: int) -> None:
    """Enqueue the preparation of one mailing (idempotent: one job id per mailing).

    A job of that id that is still queued or running is left alone. One that is over (failed,
    or started by a worker that has since died: RQ would call it started for the job's whole
    timeout) while the mailing is still Preparing is replaced, so the scheduler tick retries the
    preparation at once rather than after the old job's record expires. Preparing twice is
    harmless: `mailings.prepare` works only on a mailing still Preparing, in one transaction.
    """
    from jobs.periodic import is_alive

    queue = _queue()
    job_id = f"prepare-{mailing_id}"
    try:
        for _ in range(2):
            try:
                queue.enqueue("jobs.sending.prepare_mailing", mailing_id, job_id=job_id,
                              unique=True, job_timeout=3600, result_ttl=60,
                              failure_ttl=24 * 3600)
                return
            except DuplicateJobError:
                try:
                    old = Job.fetch(job_id, connection=queue.connection)
                except NoSuchJobError:
                    continue  # gone meanwhile: enqueue now
                status = old.get_status(refresh=True)
                abandoned = (status == JobStatus.STARTED
                             and not is_alive(queue.connection, old.worker_name))
                if status not in _OVER and not abandoned:
                    return  # queued or running
                log.info("prepare of mailing %s: replacing its %s job", mailing_id,
                         old.get_status())
                old.delete()
    except (RedisError, RuntimeError) as exc:
        # The database says Preparing; the scheduler tick enqueues it again when Redis is back.
        log.warning("prepare of mailing %s not enqueued now: %s", mailing_id, exc)


def queued_send_jobs(queue: Queue) -> int:
    return sum(1 for job_id in queue.get_job_ids() if job_id.startswith("send-"))


def kick_sending(successor: bool = False) -> None:
    """Keep send jobs waiting for every sending worker while anything is sending.

    A send job enqueues its successor as soon as it has claimed a batch (`successor=True`), so
    another worker can take the next batch meanwhile; a job that finds nothing to send enqueues
    none, so the chain ends with the work. The tick tops the queue up after a crash or a Redis
    restart. Only live workers count (those whose ticker marked them alive in the last few
    seconds, jobs/periodic.py): RQ's registry lists a worker killed with SIGKILL for minutes.
    Jobs started by a dead worker are not counted either: their chain already moved on.
    """
    import uuid

    from jobs.periodic import live_workers

    try:
        queue = _queue()
        if successor:
            wanted = 1
        else:
            wanted = max(1, live_workers(get_redis())) - queued_send_jobs(queue)
        for _ in range(max(0, wanted)):
            queue.enqueue("jobs.sending.send_next_batch", job_id=f"send-{uuid.uuid4().hex}",
                          job_timeout=SEND_JOB_TIMEOUT, result_ttl=30, failure_ttl=24 * 3600)
    except (RedisError, RuntimeError) as exc:
        log.warning("send jobs not enqueued now: %s", exc)

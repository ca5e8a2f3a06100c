"""Outbound webhook jobs: the periodic pump and the per-endpoint delivery job.

`tick` (a periodic job, every 2 seconds) turns new response events into delivery rows (one
transaction per delivery: the row and the endpoint's cursor together) and enqueues a delivery job
for every endpoint whose oldest pending delivery is due, which also picks up deliveries a dead
worker left claimed once their lease is over. `deliver_endpoint` sends one endpoint's due
deliveries, oldest first, one at a time, for a bounded time. Nothing here runs in the ingestion
or sending path: those only insert response events.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from jobs.context import in_app_context

log = logging.getLogger("sendboard.jobs.outbound")

QUEUE = "default"
PUMP_BUDGET_SECONDS = 5.0  # one tick gathers deliveries for at most this long
DELIVER_BUDGET_SECONDS = 30.0  # one delivery job sends for at most this long, then yields
MAX_DELIVERIES_PER_PUMP = 200  # per endpoint and tick (200 x 500 events)
JOB_TIMEOUT = 300
_OVER = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED}


def job_id(endpoint_id: int) -> str:
    return f"webhook-endpoint-{endpoint_id}"


def pump_all(budget: float = PUMP_BUDGET_SECONDS, now: datetime | None = None) -> int:
    """Gather new events into deliveries for every endpoint; commits per delivery."""
    from app.extensions import db
    from app.services import outbound

    started = time.monotonic()
    made = 0
    for endpoint_id in outbound.pumpable_endpoints():
        for _ in range(MAX_DELIVERIES_PER_PUMP):
            try:
                result = outbound.pump_endpoint(endpoint_id, now=now)
                db.session.commit()
            except Exception:
                db.session.rollback()
                log.exception("webhook pump of endpoint %s failed", endpoint_id)
                break
            if result is None:
                break
            if result is not True:
                made += 1
            if time.monotonic() - started > budget:
                return made
    return made


def enqueue_endpoint(endpoint_id: int, connection: Any = None) -> bool:
    """Enqueue the delivery job of an endpoint unless one is waiting or running (a job left
    "started" by a dead worker is replaced). False when Redis refused."""
    from app.redis_conn import get_redis
    from jobs.periodic import is_alive

    try:
        queue = Queue(QUEUE, connection=connection or get_redis())
        for _ in range(2):
            try:
                queue.enqueue("jobs.outbound.deliver_endpoint", endpoint_id,
                              job_id=job_id(endpoint_id), unique=True, job_timeout=JOB_TIMEOUT,
                              result_ttl=0, failure_ttl=3600)
                return True
            except DuplicateJobError:
                try:
                    old = Job.fetch(job_id(endpoint_id), connection=queue.connection)
                except NoSuchJobError:
                    continue
                status = old.get_status(refresh=True)
                abandoned = (status == JobStatus.STARTED
                             and not is_alive(queue.connection, old.worker_name))
                if status not in _OVER and not abandoned:
                    return True
                old.delete()
    except (RedisError, RuntimeError) as exc:
        # The rows stay pending and due: the next tick enqueues again.
        log.warning("webhook delivery job of endpoint %s not enqueued now: %s", endpoint_id, exc)
        return False
    return False


@in_app_context
def tick() -> dict[str, int]:
    """Pump new events into deliveries, then enqueue every endpoint with a due delivery."""
    from app.services import outbound

    made = pump_all()
    due = outbound.endpoints_due()
    for endpoint_id in due:
        enqueue_endpoint(endpoint_id)
    if made or due:
        log.debug("webhooks: %d new deliveries, %d endpoints due", made, len(due))
    return {"deliveries": made, "endpoints_due": len(due)}


def deliver_due(endpoint_id: int, budget: float = DELIVER_BUDGET_SECONDS,
                poster: Any = None) -> int:
    """Send the endpoint's due deliveries oldest first until one fails, none is due, or the
    budget is spent; returns how many attempts were made. Commits the claim before each POST
    and the outcome after it."""
    from app.extensions import db
    from app.services import outbound

    started = time.monotonic()
    attempts = 0
    while time.monotonic() - started < budget:
        delivery = outbound.claim_next(endpoint_id, datetime.now(UTC))
        db.session.commit()
        if delivery is None:
            break
        try:
            answer = outbound.attempt(delivery, poster=poster)
            db.session.commit()
        except Exception:  # the endpoint deleted meanwhile, the database gone: the row decides
            db.session.rollback()
            log.exception("webhook delivery %s: the attempt could not be recorded", delivery.id)
            break
        attempts += 1
        if answer.status_code is None or not 200 <= answer.status_code < 300:
            break  # the next try waits for its backoff; newer deliveries wait behind it
    return attempts


@in_app_context
def deliver_endpoint(endpoint_id: int) -> int:
    return deliver_due(endpoint_id)

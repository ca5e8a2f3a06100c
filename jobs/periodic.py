"""Periodic jobs, declared in one list, and the liveness of worker processes.

Every worker process runs a small ticker thread that enqueues each periodic job once per time slot
under a deterministic job id (``periodic-<name>-<slot>``) with ``unique=True``: any number of
workers, restarted any number of times, enqueue each slot's job once, and a Redis restart loses at
most one slot (the next slot enqueues again from nothing).

Periodic jobs have a queue of their own (``periodic``) that every worker listens to before
``sending``: a worker takes the waiting periodic job before its next send job, so a mailing in
full flow cannot starve the tick that settles crashed batches and starts due schedules. When
every worker is in the middle of a batch (batches can last many seconds on a slow relay), one
sender steps aside: between two messages it ends its batch early (`should_yield`) and takes the
periodic job next. A periodic job never expires while it waits; instead a slot is skipped while
the same job of an earlier slot is still waiting, so a busy period leaves one job of each name
waiting, not a pile.

The ticker also marks its worker alive every second (``sb:workers:alive``, a sorted set of RQ
worker name -> last mark). A worker killed with SIGKILL stops marking at once, while RQ's own
registry keeps listing it for minutes (and its job "started" for as long as the job's timeout), so
this is what counts the workers able to take send jobs and tells a running job from an abandoned
one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.utils import utcparse

log = logging.getLogger("sendboard.periodic")

QUEUE = "periodic"
ALIVE_KEY = "sb:workers:alive"
WORKER_ALIVE_TTL = 5.0  # seconds without a mark before a worker counts as gone
YIELD_AFTER = 1.0  # seconds a periodic job waits before a busy sender steps aside for it


@dataclass(frozen=True)
class Periodic:
    name: str
    func: str  # dotted path, so this module imports no job code
    every: int  # seconds
    queue: str = QUEUE


PERIODIC: list[Periodic] = [
    Periodic("tick", "jobs.sending.tick", every=2),
    Periodic("deferred-due", "jobs.sending.deferred_due", every=15),
    Periodic("response-time-rules", "jobs.responses.time_rules", every=300),
    Periodic("process-bounces", "jobs.responses.process_bounces", every=30),
    Periodic("ab-decide", "jobs.ab_tests.decide_due", every=30),
    Periodic("webhooks-out", "jobs.outbound.tick", every=2),
]


def _waiting(queue: Queue, name: str) -> bool:
    """Is a job of this periodic name (any slot) still waiting in its queue?"""
    prefix = f"periodic-{name}-"
    return any(job_id.startswith(prefix) for job_id in queue.get_job_ids())


def enqueue_due(connection: Redis, now: float | None = None) -> int:
    """Enqueue every periodic job whose current slot is not enqueued yet; returns how many."""
    now = time.time() if now is None else now
    count = 0
    for p in PERIODIC:
        slot = int(now // p.every)
        job_id = f"periodic-{p.name}-{slot}"
        queue = Queue(p.queue, connection=connection)
        # Cheap guards before enqueue: unique=True is the real protection against a race.
        if connection.exists(f"rq:job:{job_id}") or _waiting(queue, p.name):
            continue
        try:
            # ttl=None: a waiting periodic job never expires unseen; `_waiting` bounds the queue.
            queue.enqueue(p.func, job_id=job_id, unique=True, result_ttl=60, ttl=None,
                          failure_ttl=3600)
        except DuplicateJobError:  # a racing worker enqueued this slot first
            continue
        count += 1
    return count


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def should_yield(connection: Redis, now: float | None = None) -> bool:
    """Should this sender end its batch now, to run the periodic job that waits?

    Yes when the job first in the periodic queue has waited YIELD_AFTER seconds (no idle worker
    took it) and no other sender has already stepped aside for it: one batch ends early, not all.
    Asked between messages a few times a second, so the common answer costs one LINDEX.
    """
    first = connection.lindex(Queue(QUEUE, connection=connection).key, 0)
    if first is None:
        return False
    job_id = _text(first)
    enqueued = connection.hget(f"rq:job:{job_id}", "enqueued_at")
    if not enqueued:
        return False
    now = time.time() if now is None else now
    waited = now - utcparse(_text(enqueued)).replace(tzinfo=UTC).timestamp()
    if waited < YIELD_AFTER:
        return False
    return bool(connection.set(f"sb:yield:{job_id}", 1, nx=True, ex=600))


def mark_alive(connection: Redis, worker_name: str, now: float | None = None) -> None:
    """Record that this worker process is alive now (the ticker calls it every second)."""
    now = time.time() if now is None else now
    pipe = connection.pipeline()
    pipe.zadd(ALIVE_KEY, {worker_name: now})
    pipe.zremrangebyscore(ALIVE_KEY, "-inf", now - 60)  # long-gone workers drop out
    pipe.execute()


def mark_gone(connection: Redis, worker_name: str) -> None:
    connection.zrem(ALIVE_KEY, worker_name)


def is_alive(connection: Redis, worker_name: str | None, now: float | None = None) -> bool:
    """Did the worker of this RQ name mark itself alive within WORKER_ALIVE_TTL seconds?"""
    if not worker_name:
        return False
    now = time.time() if now is None else now
    score = connection.zscore(ALIVE_KEY, worker_name)
    return score is not None and float(score) >= now - WORKER_ALIVE_TTL


def live_workers(connection: Redis, now: float | None = None) -> int:
    """How many worker processes marked themselves alive within WORKER_ALIVE_TTL seconds."""
    now = time.time() if now is None else now
    return int(connection.zcount(ALIVE_KEY, now - WORKER_ALIVE_TTL, "+inf"))


class Ticker(threading.Thread):
    """Background thread of a worker process that keeps the periodic jobs flowing."""

    def __init__(self, connection: Redis, worker_name: str | None = None,
                 interval: float = 1.0, *, enqueue: bool = True) -> None:
        super().__init__(name="sendboard-ticker", daemon=True)
        self.connection = connection
        self.worker_name = worker_name  # the RQ name of this process's worker, once it has one
        self.interval = interval
        self.enqueue = enqueue  # a burst worker only marks itself alive
        self.stopped = threading.Event()

    def beat(self) -> None:
        if self.worker_name:
            mark_alive(self.connection, self.worker_name)
        if self.enqueue:
            enqueue_due(self.connection)

    def run(self) -> None:
        while True:
            try:
                self.beat()
            except RedisError as exc:  # Redis restarting: try again next second
                log.warning("periodic jobs not enqueued: %s", exc)
            if self.stopped.wait(self.interval):
                break
        if self.worker_name:
            try:
                mark_gone(self.connection, self.worker_name)
            except RedisError:
                pass  # the mark lapses by itself

    def stop(self) -> None:
        self.stopped.set()


def install(connection: Redis, worker_name: str | None = None, *, enqueue: bool = True) -> Ticker:
    """Start the ticker thread for this worker process."""
    ticker = Ticker(connection, worker_name, enqueue=enqueue)
    ticker.start()
    return ticker

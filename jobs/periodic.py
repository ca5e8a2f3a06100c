"""Periodic jobs, declared in one list.

Every worker process runs a small ticker thread that enqueues each periodic job once per time slot
under a deterministic job id (``periodic-<name>-<slot>``) with ``unique=True``: any number of
workers, restarted any number of times, enqueue each slot's job once, and a Redis restart loses at
most one slot (the next slot enqueues again from nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError

log = logging.getLogger("sendboard.periodic")


@dataclass(frozen=True)
class Periodic:
    name: str
    func: str  # dotted path, so this module imports no job code
    every: int  # seconds
    queue: str = "default"


PERIODIC: list[Periodic] = [
    Periodic("tick", "jobs.sending.tick", every=5, queue="sending"),
    Periodic("response-time-rules", "jobs.responses.time_rules", every=300),
    Periodic("process-bounces", "jobs.responses.process_bounces", every=30),
]


def enqueue_due(connection: Redis, now: float | None = None) -> int:
    """Enqueue every periodic job whose current slot is not enqueued yet; returns how many."""
    now = time.time() if now is None else now
    count = 0
    for p in PERIODIC:
        slot = int(now // p.every)
        job_id = f"periodic-{p.name}-{slot}"
        queue = Queue(p.queue, connection=connection)
        # A cheap guard before enqueue: unique=True is the real protection against a race.
        if connection.exists(f"rq:job:{job_id}"):
            continue
        try:
            queue.enqueue(p.func, job_id=job_id, unique=True, result_ttl=60, ttl=p.every * 4,
                          failure_ttl=3600)
        except DuplicateJobError:  # a racing worker enqueued this slot first
            continue
        count += 1
    return count


class Ticker(threading.Thread):
    """Background thread of a worker process that keeps the periodic jobs flowing."""

    def __init__(self, connection: Redis, interval: float = 1.0) -> None:
        super().__init__(name="sendboard-ticker", daemon=True)
        self.connection = connection
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                enqueue_due(self.connection)
            except RedisError as exc:  # Redis restarting: try again next second
                log.warning("periodic jobs not enqueued: %s", exc)

    def stop(self) -> None:
        self.stopped.set()


def install(connection: Redis) -> Ticker:
    """Start the ticker thread for this worker process."""
    ticker = Ticker(connection)
    ticker.start()
    return ticker

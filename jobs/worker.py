"""The worker process: `python -m jobs.worker` (what `sendboard run` and `sendboard worker` start).

Workers run jobs in their own process (RQ's SimpleWorker): no fork per batch, one app and the
relay's SMTP connections (several, sent over at once: app/services/sending/batch.py) kept across
batches. A ticker thread enqueues the periodic jobs (jobs/periodic.py)
and marks the worker alive. Queues are taken in priority order: ``periodic`` first, so the tick
runs between two batches however full the ``sending`` queue is, then ``transactional`` (one
message each), then ``sending``, then ``default``.
If Redis goes away the worker waits for it and starts again, so a Redis restart needs no
worker restart.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import uuid

from redis.exceptions import RedisError
from rq import SimpleWorker

from app.redis_conn import QUEUE_NAMES, get_redis

log = logging.getLogger("sendboard.worker")


def run_worker(*, burst: bool = False, with_scheduler: bool = True, name: str | None = None) -> None:
    """Run one RQ worker on Sendboard's queues until stopped (or, with burst, until idle)."""
    from app import create_app
    from jobs import context, periodic

    app = create_app()
    context._app = app
    # The ticker marks this process alive under its RQ worker's name. That worker is made again
    # after a Redis restart under a new name (RQ refuses a name its registry still holds).
    base = name or uuid.uuid4().hex
    ticker = periodic.install(get_redis(), enqueue=not burst)
    try:
        for attempt in itertools.count():
            rq_name = base if attempt == 0 else f"{base}.{attempt}"
            ticker.worker_name = rq_name
            try:
                periodic.mark_alive(get_redis(), rq_name)  # before it can take a job
                worker = SimpleWorker(list(QUEUE_NAMES), connection=get_redis(), name=rq_name)
                # RQ logs four lines per job; batches and the tick would drown the useful lines.
                worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="WARNING")
                return
            except RedisError as exc:
                log.warning("Redis unavailable (%s); the worker starts again in 1 s", exc)
                time.sleep(1)
    finally:
        ticker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Sendboard RQ worker.")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--no-scheduler", action="store_true", help="do not run RQ's scheduler")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    run_worker(burst=args.burst, with_scheduler=not args.no_scheduler, name=args.name)


if __name__ == "__main__":
    main()

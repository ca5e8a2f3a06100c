"""The worker process: `python -m jobs.worker` (what `sendboard run` and `sendboard worker` start).

Workers run jobs in their own process (RQ's SimpleWorker): no fork per batch, one app and the
relay's SMTP connections (several, sent over at once: app/services/sending/batch.py) kept across
batches. A ticker thread enqueues the periodic jobs (jobs/periodic.py)
and marks the worker alive. Queues are taken in priority order: ``periodic`` first, so the tick
runs between two batches however full the ``sending`` queue is, then ``transactional`` (one
message each), then ``sending``, then ``default``.
If Redis goes away the worker waits for it and starts again, so a Redis restart needs no
worker restart. RQ's work loop also ends by itself after an error it does not handle (Redis failing
while a job's result is stored, say): when Redis is back by the time RQ has cleaned up, the loop
returns normally. Only a stop asked by a signal, or a burst worker's empty queues, ends the process;
any other end of the loop starts the worker again.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import uuid
from types import FrameType

from redis.exceptions import RedisError
from rq import SimpleWorker

from app.redis_conn import QUEUE_NAMES, get_redis

log = logging.getLogger("sendboard.worker")


class Worker(SimpleWorker):
    """RQ's in-process worker, remembering whether a signal asked it to stop.

    RQ ends its loop the same way for a SIGTERM while idle and for an error it could not
    handle; only the first must end the process.
    """

    stop_asked = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


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
                worker = Worker(list(QUEUE_NAMES), connection=get_redis(), name=rq_name)
                # RQ logs four lines per job; batches and the tick would drown the useful lines.
                worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="WARNING")
                if burst or worker.stop_asked:
                    return
                log.warning("the RQ worker loop ended after an error; it starts again in 1 s")
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

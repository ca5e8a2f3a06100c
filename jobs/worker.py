"""The worker process: `python -m jobs.worker` (what `sendboard run` and `sendboard worker` start).

Each worker runs inside one Flask app context, so jobs use the same services as the web app. The
periodic jobs (scheduler tick, reconciler) are declared once with fixed ids so that any number of
workers, restarted any number of times, never schedules them twice.
"""

from __future__ import annotations

import argparse
import logging

from rq import Worker

from app.redis_conn import QUEUE_NAMES, get_redis

log = logging.getLogger("sendboard.worker")


def run_worker(*, burst: bool = False, with_scheduler: bool = True, name: str | None = None) -> None:
    """Run one RQ worker on Sendboard's queues until stopped (or, with burst, until idle)."""
    from app import create_app

    app = create_app()
    with app.app_context():
        from jobs import periodic

        periodic.install(get_redis())
        worker = Worker(list(QUEUE_NAMES), connection=get_redis(), name=name)
        worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a Sendboard RQ worker.")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--no-scheduler", action="store_true", help="do not run RQ's scheduler")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    run_worker(burst=args.burst, with_scheduler=not args.no_scheduler, name=args.name)


if __name__ == "__main__":
    main()

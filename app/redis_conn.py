"""The Redis connection and queues, shared by the web app, the jobs and the CLI."""

from __future__ import annotations

import os
from functools import lru_cache

from redis import Redis
from rq import Queue

# In the priority order workers listen to them: periodic jobs (the tick) before send jobs, and
# transactional emails (one message each, jobs/transactional.py) before the bulk send jobs.
QUEUE_NAMES = ("periodic", "transactional", "sending", "default")


def redis_url() -> str:
    """REDIS_URL, or the embedded server's socket that `sendboard run` exported."""
    url = os.environ.get("REDIS_URL", "")
    if not url:
        raise RuntimeError(
            "REDIS_URL is not set: start Sendboard with `sendboard run` (which starts an embedded "
            "Redis) or point REDIS_URL at a Redis server"
        )
    return url


@lru_cache(maxsize=4)
def _connect(url: str) -> Redis:
    return Redis.from_url(url)


def get_redis() -> Redis:
    return _connect(redis_url())


def queue(name: str = "default") -> Queue:
    return Queue(name, connection=get_redis())

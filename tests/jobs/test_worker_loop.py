"""A worker process outlives RQ's own work loop: only a stop signal ends it.

RQ ends its loop on any error it does not handle. When that error came from Redis going away and
Redis is back by the time RQ has cleaned up, the loop returns as if asked to stop; a worker that
then exited would leave every mailing Sending with nobody to send it. A job record RQ cannot read
ends the loop the same way while Redis stays up, which makes the case reproducible here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from app.runtime.redis_server import EmbeddedRedis

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_worker_starts_again_when_rq_loop_ends_and_stops_on_sigterm(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis").start()
    log = tmp_path / "worker.log"
    env = {**os.environ, "REDIS_URL": redis.url, "PYTHONPATH": str(ROOT),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'sendboard.db'}",
           "SENDBOARD_INSTANCE": str(tmp_path), "SECRET_KEY": "worker-loop"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.worker", "--no-scheduler"], env=env,
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))
    conn = Redis.from_url(redis.url)
    try:
        assert _wait(lambda: conn.zcard("sb:workers:alive") > 0), "the worker did not start"
        # A job record with a date RQ cannot parse: RQ's loop logs it and returns.
        conn.hset("rq:job:unreadable", mapping={"created_at": "not a date", "status": "queued",
                                                "data": "x"})
        conn.rpush("rq:queue:default", "unreadable")
        assert _wait(lambda: b"starts again" in log.read_bytes()), log.read_text()[-2000:]
        assert proc.poll() is None, "the worker process exited when RQ's loop ended"

        job = Queue("default", connection=conn).enqueue("os.getpid")
        assert _wait(lambda: Job.fetch(job.id, connection=conn).get_status() == JobStatus.FINISHED)

        proc.send_signal(signal.SIGTERM)  # a stop asked by a signal ends the process
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        conn.close()
        redis.stop()

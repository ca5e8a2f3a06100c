"""Periodic jobs have their own queue, taken before send jobs, and never expire unseen; only
workers that marked themselves alive recently count as able to take send jobs."""

from __future__ import annotations

from rq import Queue, SimpleWorker
from rq.job import Job

from app.redis_conn import QUEUE_NAMES
from jobs import periodic
from jobs.enqueue import kick_sending, queued_send_jobs


def record(label: str) -> None:
    """A job that notes when it ran (in Redis: the worker may import this module afresh)."""
    from app.redis_conn import get_redis

    get_redis().rpush("test:order", label)


def test_periodic_jobs_are_on_their_own_queue_listened_to_before_sending() -> None:
    assert {p.queue for p in periodic.PERIODIC} == {"periodic"}
    assert QUEUE_NAMES.index("periodic") < QUEUE_NAMES.index("sending")
    tick = next(p for p in periodic.PERIODIC if p.func == "jobs.sending.tick")
    assert tick.every <= 5


def test_a_worker_takes_the_periodic_job_before_waiting_send_jobs(redis_conn) -> None:
    sending = Queue("sending", connection=redis_conn)
    for i in range(3):
        sending.enqueue("tests.jobs.test_periodic.record", f"send-{i}")
    # Enqueued last, taken first: the tick does not wait behind a full sending queue.
    Queue("periodic", connection=redis_conn).enqueue("tests.jobs.test_periodic.record", "tick")
    SimpleWorker(list(QUEUE_NAMES), connection=redis_conn).work(burst=True)
    assert redis_conn.lrange("test:order", 0, -1) == [b"tick", b"send-0", b"send-1", b"send-2"]


def test_a_waiting_periodic_job_does_not_expire_and_slots_do_not_pile_up(redis_conn) -> None:
    assert periodic.enqueue_due(redis_conn, now=1000.0) == len(periodic.PERIODIC)
    queue = Queue("periodic", connection=redis_conn)
    ids = queue.get_job_ids()
    assert len(ids) == len(periodic.PERIODIC)
    tick_id = next(i for i in ids if i.startswith("periodic-tick-"))
    job = Job.fetch(tick_id, connection=redis_conn)
    assert job.ttl is None and redis_conn.ttl(job.key) == -1  # no expiry while it waits
    # Later slots while the first ones still wait (every worker busy): nothing more is queued.
    assert periodic.enqueue_due(redis_conn, now=1000.0 + 3600) == 0
    assert queue.get_job_ids() == ids
    # Once the waiting jobs are taken, the next slot enqueues again.
    for job_id in ids:
        queue.remove(job_id)
    assert periodic.enqueue_due(redis_conn, now=1000.0 + 7200) == len(periodic.PERIODIC)
    assert f"periodic-tick-{int((1000 + 7200) // 2)}" in queue.get_job_ids()


def test_only_workers_marked_alive_recently_count(redis_conn) -> None:
    periodic.mark_alive(redis_conn, "a", now=100.0)
    periodic.mark_alive(redis_conn, "b", now=103.0)
    periodic.mark_alive(redis_conn, "c", now=90.0)  # killed: stopped marking 13 s ago
    assert periodic.live_workers(redis_conn, now=104.0) == 2
    assert periodic.live_workers(redis_conn, now=106.0) == 1
    periodic.mark_gone(redis_conn, "b")
    assert periodic.live_workers(redis_conn, now=104.0) == 1
    periodic.mark_alive(redis_conn, "d", now=200.0)  # marks a minute old are dropped
    assert redis_conn.zrange(periodic.ALIVE_KEY, 0, -1) == [b"d"]


def test_kick_sending_counts_live_workers_not_the_rq_registry(app, redis_conn) -> None:
    import time

    # Three workers in RQ's registry (two of them killed: RQ keeps listing them for minutes)...
    for name in ("live", "dead-1", "dead-2"):
        SimpleWorker(list(QUEUE_NAMES), connection=redis_conn, name=name).register_birth()
    # ...of which only one still marks itself alive.
    periodic.mark_alive(redis_conn, "live", now=time.time())
    periodic.mark_alive(redis_conn, "dead-1", now=time.time() - 30)
    kick_sending()
    queue = Queue("sending", connection=redis_conn)
    assert queued_send_jobs(queue) == 1
    kick_sending()  # topped up, not added to
    assert queued_send_jobs(queue) == 1
    periodic.mark_alive(redis_conn, "another", now=time.time())
    kick_sending()
    assert queued_send_jobs(queue) == 2


def test_the_ticker_marks_its_worker_alive_and_enqueues(redis_conn) -> None:
    ticker = periodic.Ticker(redis_conn, "w1")
    ticker.beat()
    assert periodic.live_workers(redis_conn) == 1
    assert any(i.startswith("periodic-tick-")
               for i in Queue("periodic", connection=redis_conn).get_job_ids())


def test_a_prepare_job_left_started_by_a_dead_worker_is_replaced(redis_conn) -> None:
    import time

    from rq.job import JobStatus

    from jobs.enqueue import prepare

    queue = Queue("sending", connection=redis_conn)
    for worker, replaced in (("alive-worker", False), ("killed-worker", True)):
        redis_conn.flushall()
        periodic.mark_alive(redis_conn, "alive-worker", now=time.time())
        periodic.mark_alive(redis_conn, "killed-worker", now=time.time() - 30)
        job = queue.enqueue("jobs.sending.prepare_mailing", 42, job_id="prepare-42")
        queue.remove(job)  # taken by a worker...
        job.worker_name = worker
        job.save()
        job.set_status(JobStatus.STARTED)  # ...which RQ keeps calling started
        prepare(42)
        again = Job.fetch("prepare-42", connection=redis_conn)
        assert again.get_status(refresh=True) == (
            JobStatus.QUEUED if replaced else JobStatus.STARTED), worker
        assert queue.get_job_ids() == (["prepare-42"] if replaced else [])


def test_one_busy_sender_steps_aside_for_a_periodic_job_that_waits(redis_conn) -> None:
    import time

    assert periodic.should_yield(redis_conn) is False  # nothing waits
    Queue("periodic", connection=redis_conn).enqueue("jobs.sending.tick", job_id="periodic-t-1")
    now = time.time()
    assert periodic.should_yield(redis_conn, now=now) is False  # an idle worker may take it
    later = now + periodic.YIELD_AFTER + 0.5
    assert periodic.should_yield(redis_conn, now=later) is True
    assert periodic.should_yield(redis_conn, now=later) is False  # one sender, not all

"""A preparation that failed is retried by the next scheduler tick, not a day later."""

from __future__ import annotations

from rq import Queue, SimpleWorker

from app.domain.lifecycle import Status
from app.extensions import db
from jobs.enqueue import prepare
from jobs.sending import tick
from tests.factories import make_audience, make_mailing, responses_of


def test_a_failed_prepare_job_is_replaced_by_the_tick(app, redis_conn, smtp):  # noqa: F811
    mailing = make_mailing([make_audience(3)])
    queue = Queue("sending", connection=redis_conn)
    # The mailing's prepare job ran and failed (say the database was locked, or its worker was
    # killed and RQ's cleanup failed the job): its record stays for a day under the same id.
    mailing.status = Status.PREPARING.value
    db.session.commit()
    queue.enqueue("builtins.divmod", 1, 0, job_id=f"prepare-{mailing.id}", failure_ttl=3600)
    SimpleWorker(["sending"], connection=redis_conn).work(burst=True)
    assert f"prepare-{mailing.id}" in queue.failed_job_registry.get_job_ids()

    prepare(mailing.id)  # a queued job is left alone...
    prepare(mailing.id)
    assert queue.get_job_ids().count(f"prepare-{mailing.id}") == 1
    tick()  # ...and the tick changes nothing more
    assert queue.get_job_ids().count(f"prepare-{mailing.id}") == 1
    SimpleWorker(["sending", "default"], connection=redis_conn).work(burst=True)
    db.session.expire_all()
    assert db.session.get(type(mailing), mailing.id).status == Status.SENT.value
    assert responses_of(mailing) == {"sent": 3}
    assert len(smtp.by_recipient()) == 3

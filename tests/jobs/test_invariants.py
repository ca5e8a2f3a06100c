"""The sending invariants, proven with real parts: worker processes that are killed with SIGKILL,
two workers racing, the SMTP server stopped mid-mailing and Redis restarted mid-mailing.

Every scenario ends by asking the capture SMTP server's own record: no address received two
copies, and every eligible recipient ended in exactly one response. They run on SQLite and, when
the test command started a PostgreSQL cluster (SENDBOARD_TEST_PG_URL), on PostgreSQL too. The
deployment is tests.deployment's.
"""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from app.domain.lifecycle import Status
from tests.deployment import CONNECTIONS, Deployment

pytestmark = pytest.mark.slow


def test_killing_workers_at_random_never_sends_twice(deployment: Deployment) -> None:
    mailing_id = deployment.seed()
    rng = random.Random(7)
    kills = 0
    worker = deployment.start_worker()
    for _ in range(4):
        time.sleep(rng.uniform(1.5, 3.5))
        status, _ = deployment.status(mailing_id)
        if status == Status.SENT.value:
            break
        deployment.kill_worker(worker)
        kills += 1
        worker = deployment.start_worker()
    assert kills >= 2, "the mailing finished before the workers could be killed"
    assert deployment.wait_for(mailing_id, {Status.SENT.value}) == Status.SENT.value
    deployment.check_invariants(mailing_id, max_unknown=kills * CONNECTIONS)


def test_two_workers_share_one_mailing(deployment: Deployment) -> None:
    mailing_id = deployment.seed()
    deployment.start_worker()
    deployment.start_worker()
    assert deployment.wait_for(mailing_id, {Status.SENT.value}) == Status.SENT.value
    counts = deployment.check_invariants(mailing_id, max_unknown=0)
    assert counts["unknown"] == 0
    from app.extensions import db
    from app.models import SendBatch

    app = deployment.app()
    with app.app_context():
        workers = {w.split("/")[0] for w in db.session.execute(select(SendBatch.worker)).scalars()}
        db.session.remove()
        db.engine.dispose()
    assert len(workers) == 2, "both workers should have sent batches"


def test_smtp_outage_interrupts_then_resume_completes(deployment: Deployment) -> None:
    deployment.env["SENDBOARD_OUTAGE_MINUTES"] = "0.1"  # 6 s of nothing but failed connections
    mailing_id = deployment.seed()
    deployment.start_worker()
    deadline = time.monotonic() + 60
    while deployment.handed_off(mailing_id) < 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    deployment.stop_capture()
    assert deployment.wait_for(mailing_id, {Status.INTERRUPTED.value}) == "interrupted"
    deployment.start_capture()
    from app.extensions import db
    from app.services import mailings

    app = deployment.app()
    with app.app_context():
        mailings.resume(mailings.get(mailing_id))
        db.session.remove()
        db.engine.dispose()
    assert deployment.wait_for(mailing_id, {Status.SENT.value}) == Status.SENT.value
    deployment.check_invariants(mailing_id, max_unknown=CONNECTIONS)  # one message per connection


def test_redis_restart_mid_mailing_completes(deployment: Deployment) -> None:
    mailing_id = deployment.seed()
    deployment.start_worker()
    deadline = time.monotonic() + 60
    while deployment.handed_off(mailing_id) < 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    deployment.redis.kill()
    time.sleep(1)
    deployment.redis.start()  # with its append-only file: the ledgers are still there
    assert deployment.wait_for(mailing_id, {Status.SENT.value}) == Status.SENT.value
    # The live worker records what it knows straight away; at most the messages in flight at the
    # moment Redis died (one per connection) are in doubt.
    deployment.check_invariants(mailing_id, max_unknown=CONNECTIONS)

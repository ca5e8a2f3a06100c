"""Faults inside the settling window cost seconds, not batches.

Real worker processes, a real Redis and the capture SMTP server, on SQLite and (when the test
command started a cluster) PostgreSQL: a worker is killed with SIGKILL in the middle of a batch
and, before its batch could be settled, Redis is killed and started again, either with its
append-only file (what the embedded server keeps) or with nothing (a Redis without persistence).
Each time the dead worker's batch must settle within seconds, nobody may receive a second copy,
every recipient must end in exactly one response, and the Unknowns are bounded: one per killed
connection, plus about one second of that worker's hand-offs when Redis lost the ledger.
"""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from app.domain.lifecycle import Status
from tests.deployment import CONNECTIONS, Deployment

pytestmark = pytest.mark.slow

RATE = 150  # messages per second over all workers: batches last seconds, kills land mid-batch
SETTLE_WITHIN = 15.0  # seconds from a worker's death to its batch settled, under full load


def _claimed(d: Deployment) -> set[int]:
    from app.extensions import db
    from app.models import SendBatch

    app = d.app()
    with app.app_context():
        ids = set(db.session.execute(
            select(SendBatch.id).where(SendBatch.state == "claimed")).scalars())
        db.session.remove()
        db.engine.dispose()
    return ids


def _wait_progress(d: Deployment, mailing_id: int, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = d.handed_off(mailing_id)
        if done >= at_least:
            return done
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} recipients settled after {timeout:.0f} s")


def _crash_inside_the_settling_window(d: Deployment, mailing_id: int, rng: random.Random,
                                      *, wipe: bool) -> float:
    """Kill a busy worker, then restart Redis before its batch lapses; returns the seconds
    until every batch claimed at the kill was settled or flushed."""
    victim = rng.choice([w for w in d.workers if w.poll() is None])
    in_flight = _claimed(d)
    deadline = time.monotonic() + 10
    while not in_flight and time.monotonic() < deadline:  # between two batches: wait for one
        time.sleep(0.05)
        in_flight = _claimed(d)
    assert in_flight, "no batch in flight to crash"
    killed_at = time.monotonic()
    d.kill_worker(victim)
    d.workers.remove(victim)
    # The dead worker's batch lapses ALIVE_TTL (8 s) after its last heartbeat: restart Redis
    # well inside that window, so its settlement meets the restarted server.
    time.sleep(rng.uniform(0.5, 2.5))
    d.redis.kill()
    if wipe:
        d.redis.wipe()
    time.sleep(0.5)
    d.redis.start()
    d.start_worker()
    deadline = killed_at + 120  # generous wait; the assertion below is on the time measured
    while time.monotonic() < deadline:
        if not in_flight & _claimed(d):
            return time.monotonic() - killed_at
        time.sleep(0.2)
    raise AssertionError(f"batches {in_flight & _claimed(d)} still claimed after 120 s")


@pytest.mark.parametrize("wipe", [False, True], ids=["redis-keeps-its-file", "redis-loses-all"])
def test_kills_and_redis_restarts_inside_the_settling_window(
        deployment: Deployment, wipe: bool) -> None:
    deployment.env["SMTP_RATE_PER_SECOND"] = str(RATE)
    mailing_id = deployment.seed()
    for _ in range(3):
        deployment.start_worker()
    rng = random.Random(11)
    settle_times = []
    done = 0
    for _ in range(3):
        done = _wait_progress(deployment, mailing_id, done + 400)
        status, _ = deployment.status(mailing_id)
        assert status == Status.SENDING.value, "the mailing finished before the faults"
        settle_times.append(_crash_inside_the_settling_window(deployment, mailing_id, rng,
                                                              wipe=wipe))
    assert deployment.wait_for(mailing_id, {Status.SENT.value}, timeout=300) == Status.SENT.value
    kills = len(settle_times)
    # One Unknown per SMTP connection of a killed worker; with the ledger lost, also what the
    # dead worker handed off since its last partial flush: at most ~1 s of sending (RATE over all
    # workers).
    max_unknown = kills * CONNECTIONS + (kills * RATE if wipe else 0)
    counts = deployment.check_invariants(mailing_id, max_unknown=max_unknown)
    print(f"\nsettle times (s): {[round(t, 1) for t in settle_times]}; "
          f"unknown: {counts['unknown']} (at most {max_unknown})")
    # With the ledger lost the reconciler first waits for live senders to mark their batches
    # again (LOST_LEDGER_GRACE of Redis uptime), which still fits the same window.
    assert max(settle_times) <= SETTLE_WITHIN, settle_times

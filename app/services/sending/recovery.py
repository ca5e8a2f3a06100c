"""Settling batches whose worker died, from their ledgers (app/services/ledger.py).

The tick finds claimed batches no longer marked alive, fences each (its sender, if it still runs,
can append nothing more), takes it with the same conditional UPDATE a sender's flush uses, turns
what the ledger says into an outcome and hands it to the one outcome writer (record.py): recorded
250s are Sent, refusals keep the server's answer (a deferral goes on to its backoff), a message
handed off without an answer is Unknown and never resent, the rest goes back to the queue. With
no ledger at all (Redis lost it), the rows below the sender's last committed bound are Unknown.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from redis import Redis
from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, MailingVersion, Recipient, SendBatch, utcnow
from app.services.ledger import exists as ledger_exists
from app.services.ledger import fence_and_read, is_alive
from app.services.rendering import merge_data
from app.services.sending.config import Deferral
from app.services.sending.record import BatchOutcome, in_flight, record, take

log = logging.getLogger("sendboard.sending")

RT = Recipient.__table__
# A ledger missing this soon after Redis started may belong to a live sender that has not marked
# its batch alive again yet (it does every second): the reconciler waits that long. Too short
# would only cost Unknowns (a live sender is fenced off), never a second copy.
LOST_LEDGER_GRACE = 5  # seconds of Redis uptime: five heartbeats


def settle_abandoned(redis: Redis) -> int:
    """Settle batches whose worker is gone, from the ledger; returns how many were settled."""
    now = utcnow()
    batches = db.session.execute(
        select(SendBatch.id, SendBatch.mailing_id, SendBatch.claimed_at)
        .where(SendBatch.state == "claimed")
    ).all()
    db.session.rollback()
    settled = 0
    uptime: int | None = None
    for batch_id, mailing_id, claimed_at in batches:
        if is_alive(redis, batch_id):
            continue
        if not ledger_exists(redis, batch_id):
            # Redis lost its data: a live sender marks its batch alive again within a second and
            # flushes from memory; wait until it has had time to do so.
            if uptime is None:
                uptime = int(redis.info("server")["uptime_in_seconds"])
            if uptime < LOST_LEDGER_GRACE and now - claimed_at < timedelta(minutes=1):
                continue  # (a batch claimed over a minute ago is not waited for)
        if _settle(redis, batch_id, mailing_id):
            settled += 1
    return settled


def _settle(redis: Redis, batch_id: int, mailing_id: int) -> bool:
    entries = fence_and_read(redis, batch_id)
    if not take(batch_id, end="settled"):
        return False
    version_id = db.session.execute(
        select(func.max(MailingVersion.id)).where(MailingVersion.mailing_id == mailing_id)
    ).scalar_one()
    # Only recipients not recorded yet: those a partial flush recorded are settled already.
    rows = db.session.execute(
        select(RT.c.id, RT.c.address, Contact.name, Contact.fields, RT.c.response, RT.c.attempts,
               RT.c.first_deferred_at, RT.c.variant_id)
        .select_from(RT.outerjoin(Contact.__table__, Contact.id == RT.c.contact_id))
        .where(in_flight(batch_id)).order_by(RT.c.id)
    ).all()
    doubtful: set[int] = set()
    if entries.lost:
        # No record: in doubt are the rows below the sender's last committed bound (read after
        # `take`, so no partial flush can raise it any more); the rest were never tried. A bound
        # of 0 comes from a claim made before bounds were kept: the whole batch.
        reach = db.session.execute(
            select(SendBatch.handoff_reach).where(SendBatch.id == batch_id)).scalar_one()
        below = select(RT.c.id).where(RT.c.batch_id == batch_id).order_by(RT.c.id)
        doubtful = set(db.session.execute(below.limit(reach) if reach else below).scalars())
    now = utcnow()
    deferral = Deferral.current()
    lost = ("the Redis hand-off record was lost with the worker" if entries.lost
            else "the worker stopped during this hand-off; it may have been delivered")
    outcome = BatchOutcome(origin={r.id: Response(r.response) for r in rows})
    for r in rows:
        if r.id in doubtful or r.id in entries.ambiguous:
            outcome.add_final(r.id, Response.UNKNOWN, lost)
        elif r.id in entries.sent:
            mid, at = entries.sent[r.id]
            outcome.add_sent(r.id, mid, at, merge_data(r.name or "", r.address, r.fields,
                                                       r.variant_id))
        elif r.id in entries.refused:
            response, reply = entries.refused[r.id]  # what the server answered, not Unknown
            if response is Response.DEFERRED:  # refused for now: on to its backoff
                attempts, first, next_at = deferral.decide(
                    attempts=r.attempts or 0, first=r.first_deferred_at, now=now)
                if next_at is not None:
                    outcome.add_final(r.id, response, reply, deferral=(attempts, first, next_at))
                    continue
                response = Response.SOFT_BOUNCE
            outcome.add_final(r.id, response, reply, refused=True)
    record(batch_id, mailing_id, outcome, version_id, release=True)
    log.warning("settled abandoned batch %s: %d sent, %d refused, %d unknown, %d back in the queue",
                batch_id, len(outcome.sent), outcome.refused,
                sum(1 for resp, _ in outcome.final.values() if resp is Response.UNKNOWN),
                len(rows) - len(outcome.sent) - len(outcome.final))
    return True

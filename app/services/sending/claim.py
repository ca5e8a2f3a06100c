"""Claiming batches: which mailing goes next, and the slice of its recipients one worker holds.

A batch is claimed by one conditional UPDATE (row locks with SKIP LOCKED on PostgreSQL), so two
workers never hold the same recipient. Deferred recipients that are due come first (claiming one
clears its next attempt time in the same UPDATE), then Planned ones, in id order. The batch's
ledger is opened before the claim commits, so every committed claim has one. The configuration
the batch is sent by (`BatchConfig`) is read here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis import Redis
from sqlalchemy import func, select, update

from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.domain.thresholds import quota_left
from app.extensions import db
from app.models import Mailing, QuotaUsage, Recipient, SendBatch, utcnow
from app.services import windows
from app.services.ledger import Ledger, discard
from app.services.sending.config import BatchConfig
from app.services.sending.state import expire, finish_if_done, interrupt

RT = Recipient.__table__
WINDOW_MIN = 20  # recipients a sender may always go past its last partial flush (batch.py)


class Pace:
    """Recipients this process hands off in about a second, last measured by a sender
    (batch._Progress): the bound a new claim commits before its first partial flush."""

    window = WINDOW_MIN


@dataclass
class Claim:
    batch_id: int
    mailing_id: int
    size: int
    reach: int = 0  # the sender hands off none of the batch past this position (batch._Progress)
    config: BatchConfig | None = None  # read once, at the claim


def _month(now: datetime) -> str:
    return now.strftime("%Y-%m")


def quota_remaining(now: datetime, quota: int | None = None) -> int | None:
    """Messages the monthly quota still allows (None: no quota)."""
    from app.services import settings

    quota = int(settings.get("monthly_quota")) if quota is None else quota
    used = db.session.get(QuotaUsage, _month(now))
    return quota_left(quota=quota or None, used_this_month=used.used if used else 0)


def sending_queue() -> list[int]:
    """Mailings that are sending, in the order they started (the queue order)."""
    rows = db.session.execute(
        select(Mailing.id)
        .where(Mailing.status == Status.SENDING.value)
        .order_by(Mailing.queued_at, Mailing.id)
    )
    return [r[0] for r in rows]


def claim_batch(redis: Redis, worker: str, only: int | None = None) -> Claim | None:
    """Claim the next batch of the oldest sending mailing (or of mailing `only`); None when
    nothing is left to send."""
    now = utcnow()
    config = BatchConfig.current()
    for mailing_id in sending_queue() if only is None else [only]:
        mailing = db.session.get(Mailing, mailing_id)
        if mailing is None or mailing.status != Status.SENDING.value:
            continue
        if mailing.send_until is not None and now >= mailing.send_until:
            expire(mailing_id)
            continue
        if not windows.open_now(mailing, now):
            continue  # outside its send window: nothing claimed; the tick comes back
        left = quota_remaining(now, config.monthly_quota)
        if left == 0:
            interrupt(mailing_id, f"the monthly sending quota of {config.monthly_quota:,} "
                                  "messages is used up")
            continue
        size = config.batch_size
        if left is not None:
            size = min(size, left)
        claim = _claim_rows(redis, mailing_id, size, worker)
        if claim is not None:
            claim.config = config
            return claim
        finish_if_done(mailing_id)
    return None


def _claim_rows(redis: Redis, mailing_id: int, size: int, worker: str) -> Claim | None:
    postgres = db.engine.dialect.name == "postgresql"
    if postgres:
        # Shared lock on the mailing: cancel (which updates it) waits for claims in flight.
        db.session.execute(
            select(Mailing.id).where(Mailing.id == mailing_id).with_for_update(read=True)
        )
    batch = SendBatch(mailing_id=mailing_id, worker=worker)
    db.session.add(batch)
    db.session.flush()
    Ledger(redis, batch.id).open()  # before commit: every committed claim has a ledger
    # Deferred recipients that are due first, then Planned ones. Claiming a deferred recipient
    # clears its next attempt time in the same UPDATE, so no other claim can take it again.
    due = (
        select(RT.c.id)
        .where(RT.c.mailing_id == mailing_id, RT.c.response == Response.DEFERRED.value,
               RT.c.next_attempt_at <= utcnow())
        .order_by(RT.c.next_attempt_at, RT.c.id)
        .limit(size)
    )
    if postgres:
        due = due.with_for_update(skip_locked=True)
    claimed = int(db.session.execute(
        update(RT).where(RT.c.id.in_(due.scalar_subquery()),
                         RT.c.response == Response.DEFERRED.value,
                         RT.c.next_attempt_at.is_not(None))
        .values(batch_id=batch.id, next_attempt_at=None)
    ).rowcount or 0)
    if claimed < size:
        pick = (
            select(RT.c.id)
            .where(RT.c.mailing_id == mailing_id, RT.c.response == Response.PLANNED.value,
                   RT.c.batch_id.is_(None), windows.released(utcnow()))
            .order_by(RT.c.id)
            .limit(size - claimed)
        )
        if postgres:
            pick = pick.with_for_update(skip_locked=True)
        claimed += int(db.session.execute(
            update(RT).where(RT.c.id.in_(pick.scalar_subquery())).values(batch_id=batch.id)
        ).rowcount or 0)
    if claimed == 0:
        db.session.rollback()
        discard(redis, batch.id)
        return None
    batch.size = claimed
    batch.handoff_reach = min(claimed, Pace.window)  # the first bound, committed with the claim
    db.session.commit()
    return Claim(batch.id, mailing_id, claimed, batch.handoff_reach)


def has_work() -> bool:
    """Is any mailing sending with recipients still Planned?"""
    row = db.session.execute(
        select(Mailing.id).where(Mailing.status == Status.SENDING.value).limit(1)
    ).first()
    return row is not None


def deferred_due() -> bool:
    """Is a Deferred recipient of a sending mailing due for its next attempt?"""
    now = utcnow()
    for mailing_id in sending_queue():
        due = db.session.execute(
            select(RT.c.id).where(RT.c.mailing_id == mailing_id,
                                  RT.c.response == Response.DEFERRED.value,
                                  RT.c.next_attempt_at <= now).limit(1)
        ).first()
        if due is not None:
            return True
    return False


def deferred_summary(mailing_id: int) -> tuple[int, datetime | None]:
    """How many recipients are Deferred, and the earliest next attempt among them."""
    count, soonest = db.session.execute(
        select(func.count(), func.min(RT.c.next_attempt_at))
        .where(RT.c.mailing_id == mailing_id, RT.c.response == Response.DEFERRED.value)
    ).one()
    return int(count or 0), soonest

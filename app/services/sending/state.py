"""A mailing's status as the engine moves it: interrupted, expired, finished, and the flag that
tells its senders to stop. Every move is a row of the lifecycle (app/domain/lifecycle.py), made by
one conditional UPDATE from the statuses that row allows, so two workers racing change it once.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, select, update

from app.domain import lifecycle
from app.domain.lifecycle import Action, Status
from app.domain.responses import Response
from app.domain.thresholds import Thresholds, interrupt_reason
from app.extensions import db
from app.models import Mailing, Recipient, SendBatch, utcnow
from app.services import totals

log = logging.getLogger("sendboard.sending")

RT = Recipient.__table__


def stop_key(mailing_id: int) -> str:
    """Set when a mailing is canceled or interrupted; senders check it between messages."""
    return f"sb:stop:{mailing_id}"


def move(mailing_id: int, action: Action, **values: Any) -> bool:
    """Take `action` on a mailing if its status allows it now (in the caller's transaction);
    False when it does not (another worker, or a person, moved it first)."""
    by_target: dict[Status, list[str]] = {}
    for source, target in lifecycle.moves_of(action).items():
        by_target.setdefault(target, []).append(source.value)
    for target, sources in by_target.items():
        changed = db.session.execute(
            update(Mailing).where(Mailing.id == mailing_id, Mailing.status.in_(sources))
            .values(status=target.value, **values)
        ).rowcount
        if changed:
            return True
    return False


def _set_stop_flag(mailing_id: int) -> None:
    from app.redis_conn import get_redis

    try:
        get_redis().set(stop_key(mailing_id), 1, ex=7 * 24 * 3600)
    except (RedisError, RuntimeError) as exc:  # senders also see the status at flush
        log.warning("stop flag for mailing %s not set: %s", mailing_id, exc)


def clear_stop_flag(mailing_id: int) -> None:
    from app.redis_conn import get_redis

    try:
        get_redis().delete(stop_key(mailing_id))
    except (RedisError, RuntimeError) as exc:
        log.warning("stop flag for mailing %s not cleared: %s", mailing_id, exc)


def interrupt(mailing_id: int, reason: str) -> bool:
    """Sending (or Preparing) -> Interrupted with the reason; the rest stays Planned for a resume."""
    changed = move(mailing_id, Action.INTERRUPT, status_reason=reason[:2000],
                   interrupted_at=utcnow())
    db.session.commit()
    if changed:
        log.warning("mailing %s interrupted: %s", mailing_id, reason)
        _set_stop_flag(mailing_id)
        from app.services.chains import on_step_interrupted

        on_step_interrupted(mailing_id)
    return bool(changed)


def cancel_unclaimed(mailing_id: int, response: Response = Response.CANCELED) -> int:
    """Planned recipients not held by a batch, and Deferred ones waiting for their next attempt,
    get `response`, in the caller's transaction."""
    now = utcnow()
    count = int(db.session.execute(
        update(RT).where(RT.c.mailing_id == mailing_id,
                         RT.c.response == Response.PLANNED.value, RT.c.batch_id.is_(None))
        .values(response=response.value, response_at=now, updated_at=now)
    ).rowcount or 0)
    if count:
        totals.move(mailing_id, Response.PLANNED, response, count)
    deferred = int(db.session.execute(
        update(RT).where(RT.c.mailing_id == mailing_id,
                         RT.c.response == Response.DEFERRED.value,
                         RT.c.next_attempt_at.is_not(None))
        .values(response=response.value, response_at=now, next_attempt_at=None, updated_at=now)
    ).rowcount or 0)
    if deferred:
        totals.move(mailing_id, Response.DEFERRED, response, deferred)
    return count + deferred


def expire(mailing_id: int) -> None:
    """The send-until deadline passed: the rest is Stopped (expired) and the mailing ends (as
    Sent, the lifecycle's Expire) once its batches in flight are recorded."""
    cancel_unclaimed(mailing_id, Response.EXPIRED)
    db.session.execute(  # the reason only: the status moves when nothing is left (finish_if_done)
        update(Mailing).where(Mailing.id == mailing_id, Mailing.status == Status.SENDING.value)
        .values(status_reason="the send-until deadline passed")
    )
    db.session.commit()
    finish_if_done(mailing_id)


def _open_batches(mailing_id: int) -> int:
    return int(db.session.execute(
        select(func.count()).select_from(SendBatch)
        .where(SendBatch.mailing_id == mailing_id, SendBatch.state == "claimed")
    ).scalar_one())


def finish_if_done(mailing_id: int) -> bool:
    """Sending -> Sent once no recipient is Planned or Deferred and no batch is in flight."""
    planned = db.session.execute(
        select(RT.c.id).where(RT.c.mailing_id == mailing_id,
                              RT.c.response.in_([Response.PLANNED.value,
                                                 Response.DEFERRED.value])).limit(1)
    ).first()
    if planned is not None or _open_batches(mailing_id):
        db.session.rollback()
        return False
    changed = move(mailing_id, Action.FINISH, finished_at=utcnow())
    db.session.commit()
    if changed:
        log.info("mailing %s sent", mailing_id)
        from app.services.chains import on_parent_sent

        on_parent_sent(mailing_id)
    return bool(changed)


def after_batch(mailing_id: int, stop: str | None, stop_detail: str, limits: Thresholds) -> None:
    """Interrupt on an outage or a passed threshold; finish when nothing is left."""
    if stop in {"smtp", "template"}:
        interrupt(mailing_id, stop_detail or "the SMTP server failed")
        return
    if stop == "redis":
        return  # the reconciler re-enqueues sending once Redis is back
    counters = totals.get(mailing_id)
    # Refusals at hand-off are attempts too: a list full of dead addresses must trip the limit.
    attempts = counters.get("handed_off", 0) + counters.get("refused", 0)
    reason = interrupt_reason(
        handed_off=attempts, hard_bounces=counters.get("hard_bounces", 0),
        blocked=counters.get("blocked", 0),
        complaints=counters.get("complaints", 0), limits=limits,
    )
    if reason:
        interrupt(mailing_id, reason)
        return
    finish_if_done(mailing_id)

"""Recording a batch's outcome: one writer for a sender's partial flushes, its final flush and the
settlement of a batch whose worker died (recovery.py).

Each of them first moves the batch with a conditional UPDATE (`take`): out of state "claimed" to
"done" or "settled", or, for a partial flush, to a new hand-off bound while it stays "claimed".
That UPDATE takes the batch row's lock (PostgreSQL) or the database's write lock (SQLite), so
exactly one of a sender and the reconciler records the batch, and a sender fenced off records
nothing more. Then `record` writes, in the same transaction, the responses not recorded yet
(Sent with what rebuilds the message, refusals with the server's reply, Deferred with the next
attempt, Unknown), their contact effects, the mailing's counters and the monthly quota, and, at
the end of a batch, gives the recipients not tried back to the queue (or cancels or expires
them with the mailing).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, bindparam, or_, select, update

from app.domain.bounces import classify_reply
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, QuotaUsage, Recipient, SendBatch, utcnow
from app.services import totals
from app.services.ledger import Ledger
from app.services.sending.claim import Claim, _month
from app.services.sending.config import BatchConfig
from app.services.sending.state import after_batch

RT = Recipient.__table__


@dataclass
class BatchOutcome:
    """What a batch's connections learnt, in the order they learnt it; written under `lock`."""

    sent: dict[int, tuple[str, datetime, dict[str, Any]]] = field(default_factory=dict)
    final: dict[int, tuple[Response, str]] = field(default_factory=dict)  # not sent, with detail
    stop: str | None = None  # stopped | expired | smtp | template | redis | fenced | yield | error
    refused: int = 0  # refused by the SMTP server at hand-off: they count as attempts
    stop_detail: str = ""
    recorded: tuple[int, int, int] = (0, 0, 0)  # sent, final, refused already in the database
    # Deferred ones: id -> (attempts, first refusal, next attempt); and where each row came from
    deferrals: dict[int, tuple[int, datetime, datetime]] = field(default_factory=dict)
    origin: dict[int, Response] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_sent(self, rid: int, message_id: str, at: datetime, merge: dict[str, Any]) -> None:
        with self.lock:
            self.sent[rid] = (message_id, at, merge)

    def add_final(self, rid: int, response: Response, detail: str, *, refused: bool = False,
                  deferral: tuple[int, datetime, datetime] | None = None) -> None:
        with self.lock:
            if deferral is not None:
                self.deferrals[rid] = deferral
            self.final[rid] = (response, detail)
            if refused:
                self.refused += 1


def in_flight(batch_id: int) -> Any:
    """A batch's recipients not recorded yet: Planned, or Deferred and held by it (a claimed
    deferred recipient has no next attempt time until its new outcome is recorded)."""
    return and_(RT.c.batch_id == batch_id, or_(
        RT.c.response == Response.PLANNED.value,
        and_(RT.c.response == Response.DEFERRED.value, RT.c.next_attempt_at.is_(None)),
    ))


def take(batch_id: int, *, end: str | None = None, reach: int | None = None) -> bool:
    """Move a claimed batch to `end` ("done", "settled") or, still claimed, to the hand-off bound
    `reach`; False (and the transaction rolled back) when it is not claimed any more."""
    values: dict[str, Any] = ({"state": end, "finished_at": utcnow()} if end is not None
                              else {"handoff_reach": reach})
    won = db.session.execute(
        update(SendBatch).where(SendBatch.id == batch_id, SendBatch.state == "claimed")
        .values(**values)
    ).rowcount
    if not won:
        db.session.rollback()
    return bool(won)


def record(batch_id: int, mailing_id: int, outcome: BatchOutcome, version_id: int | None, *,
           release: bool) -> None:
    """Write what `outcome` learnt since the last call and commit (after `take`). With `release`
    (the batch ends) the recipients it did not try are canceled with a canceled mailing, expired
    when the deadline stopped the batch, or else given back to the queue."""
    now = utcnow()
    moves, handed_off, refused = _record_new(outcome, version_id, now)
    if release:
        status = db.session.execute(
            select(Mailing.status).where(Mailing.id == mailing_id)).scalar_one()
        rest_response = None
        if status == Status.CANCELED.value:
            rest_response = Response.CANCELED
        elif outcome.stop == "expired":
            rest_response = Response.EXPIRED
        _release_rest(batch_id, rest_response, now, moves)
    _count_moves(mailing_id, moves, handed_off=handed_off, now=now)
    if refused:
        totals.bump(mailing_id, {"refused": refused})
    db.session.commit()


def flush(redis: Redis | None, claim: Claim, outcome: BatchOutcome, version_id: int) -> bool:
    """The end of a batch: record its outcome, close its ledger, then interrupt or finish the
    mailing if that is due; False if the reconciler settled the batch first."""
    if not take(claim.batch_id, end="done"):
        return False
    record(claim.batch_id, claim.mailing_id, outcome, version_id, release=True)
    if redis is not None:
        try:
            Ledger(redis, claim.batch_id).close()
        except RedisError:
            pass  # an orphan record expires by itself
    config = claim.config or BatchConfig.current()
    after_batch(claim.mailing_id, outcome.stop, outcome.stop_detail, config.limits)
    return True


def flush_progress(claim: Claim, outcome: BatchOutcome, version_id: int, reach: int) -> bool:
    """A partial flush: commit the outcomes known so far and the sender's new bound (batch.py,
    `_Progress`); False once the reconciler settled the batch (the sender then stops).

    Recipients recorded here are no longer in flight, so neither the final flush nor the
    reconciler records them again; if the reconciler's UPDATE came first, it read the bound
    committed before this one.
    """
    if not take(claim.batch_id, reach=reach):
        return False
    record(claim.batch_id, claim.mailing_id, outcome, version_id, release=False)
    return True


def _release_rest(batch_id: int, rest_response: Response | None, now: datetime,
                  moves: Counter[str]) -> None:
    """The batch's recipients not tried (those still in flight once its outcome is recorded):
    given `rest_response`, or back in the queue: Planned ones unclaimed, Deferred ones due again
    at once."""
    for origin in (Response.PLANNED, Response.DEFERRED):
        rest = and_(in_flight(batch_id), RT.c.response == origin.value)
        if rest_response is not None:
            count = db.session.execute(
                update(RT).where(rest).values(response=rest_response.value, response_at=now,
                                              next_attempt_at=None, updated_at=now)
            ).rowcount
            _move(moves, origin, rest_response, int(count or 0))
        elif origin is Response.PLANNED:
            db.session.execute(update(RT).where(rest).values(batch_id=None))
        else:
            db.session.execute(update(RT).where(rest).values(next_attempt_at=now))


def _record_new(outcome: BatchOutcome, version_id: int | None,
                now: datetime) -> tuple[Counter[str], int, int]:
    """Record the outcomes no flush has recorded yet; returns the moves, hand-offs and refusals.

    `outcome.sent` and `outcome.final` only grow, in the order the answers came, so what is
    recorded is a prefix of each; `outcome.recorded` counts those prefixes (and the refusals).
    """
    with outcome.lock:  # the connections go on adding meanwhile
        done_sent, done_final, done_refused = outcome.recorded
        sent = list(outcome.sent.items())[done_sent:]
        final = dict(list(outcome.final.items())[done_final:])
        deferrals = {rid: outcome.deferrals[rid] for rid in final if rid in outcome.deferrals}
        refused = outcome.refused
        outcome.recorded = (done_sent + len(sent), done_final + len(final), refused)
    moves: Counter[str] = Counter()
    if sent:
        _record_sent([{"rid": rid, "mid": mid, "at": at, "merge": merge}
                      for rid, (mid, at, merge) in sent], version_id, now)
        for rid, _ in sent:
            _move(moves, outcome.origin.get(rid, Response.PLANNED), Response.SENT)
    _record_final(final, now, moves, outcome.origin, deferrals)
    return moves, len(sent), refused - done_refused


def _move(moves: Counter[str], origin: Response, to: Response, n: int = 1) -> None:
    """Count `n` recipients moving from `origin` to `to` (net changes of the response counters)."""
    if origin is not to and n:
        moves[to.value] += n
        moves[origin.value] -= n


def _reason(detail: str) -> str:
    """The bounce reason of an SMTP reply recorded as "code text"."""
    code, _, text = detail.partition(" ")
    return classify_reply(int(code), text).reason if code.isdigit() else ""


def _record_final(final: dict[int, tuple[Response, str]], now: datetime,
                  moves: Counter[str], origin: dict[int, Response] | None = None,
                  deferrals: dict[int, tuple[int, datetime, datetime]] | None = None) -> None:
    """Give recipients a response that is not Sent (with its detail), and its contact effects.
    A Deferred one also gets its attempts, first refusal and next attempt (`deferrals`)."""
    if not final:
        return
    origin, deferrals = origin or {}, deferrals or {}
    # An Unknown (a connection or a worker lost during the hand-off) may still be replaced by
    # evidence that the message went out (docs/ARCHITECTURE.md, "Priority and finality").
    plain = [{"rid": rid, "resp": resp.value, "detail": detail[:2000],
              "reason": _reason(detail) if resp is Response.SOFT_BOUNCE else "",
              "unknown": resp is Response.UNKNOWN}
             for rid, (resp, detail) in final.items() if rid not in deferrals]
    if plain:
        db.session.execute(
            update(RT).where(RT.c.id == bindparam("rid")).values(
                response=bindparam("resp"), response_at=now, detail=bindparam("detail"),
                reason=bindparam("reason"), crash_unknown=bindparam("unknown"), next_attempt_at=None,
                updated_at=now,
            ),
            plain,
        )
    deferred = [{"rid": rid, "detail": final[rid][1][:2000], "reason": _reason(final[rid][1]),
                 "attempts": attempts, "first": first, "next": next_at}
                for rid, (attempts, first, next_at) in deferrals.items() if rid in final]
    if deferred:
        db.session.execute(
            update(RT).where(RT.c.id == bindparam("rid")).values(
                response=Response.DEFERRED.value, response_at=now, detail=bindparam("detail"),
                reason=bindparam("reason"), attempts=bindparam("attempts"),
                first_deferred_at=bindparam("first"), next_attempt_at=bindparam("next"),
                updated_at=now,
            ),
            deferred,
        )
    for rid, (resp, _) in final.items():
        _move(moves, origin.get(rid, Response.PLANNED), resp)
    _contact_effects(final)


def _record_sent(rows: list[dict[str, Any]], version_id: int | None, now: datetime) -> None:
    """Mark recipients Sent to provider with what rebuilds their message (rid, mid, at, merge)."""
    db.session.execute(
        update(RT).where(RT.c.id == bindparam("rid")).values(
            response=Response.SENT.value, response_at=bindparam("at"),
            message_id=bindparam("mid"), handed_off_at=bindparam("at"),
            merge_data=bindparam("merge"), version_id=version_id, updated_at=now,
        ),
        rows,
    )


def _count_moves(mailing_id: int, moves: Counter[str], *, handed_off: int, now: datetime) -> None:
    """Apply the net moves between responses (see `_move`) to the mailing's counters."""
    deltas: dict[str, int] = {}
    for value, n in moves.items():
        if not n:
            continue
        deltas[totals.response_key(value)] = deltas.get(totals.response_key(value), 0) + n
        cumulative = {
            Response.HARD_BOUNCE.value: "hard_bounces", Response.SOFT_BOUNCE.value: "soft_bounces",
            Response.BLOCKED.value: "blocked", Response.DELIVERY_ERROR.value: "delivery_errors",
        }.get(value)
        if cumulative and n > 0:
            deltas[cumulative] = deltas.get(cumulative, 0) + n
    if handed_off:
        deltas["handed_off"] = handed_off
    totals.bump(mailing_id, deltas)
    if handed_off:
        _use_quota(now, handed_off)


def _use_quota(now: datetime, count: int) -> None:
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(QuotaUsage).values(month=_month(now), used=count)
    db.session.execute(stmt.on_conflict_do_update(
        index_elements=[QuotaUsage.month], set_={"used": QuotaUsage.used + stmt.excluded.used}
    ))


def _contact_effects(final: dict[int, tuple[Response, str]]) -> None:
    """A hard bounce at hand-off makes the contact do-not-email and invalid."""
    hard = [rid for rid, (resp, _) in final.items() if resp is Response.HARD_BOUNCE]
    if not hard:
        return
    ids = select(RT.c.contact_id).where(RT.c.id.in_(hard), RT.c.contact_id.is_not(None))
    db.session.execute(
        update(Contact).where(Contact.id.in_(ids)).values(
            do_not_email=True, do_not_email_reason="hard bounce", valid=False,
            invalid_reason="hard bounce at hand-off",
        )
    )

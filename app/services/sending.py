"""The sending engine: claim a batch, hand its messages over, record the outcome.

Read top to bottom: `claim_batch` takes the next slice of the oldest mailing that is sending,
`send_claim` hands each message to the SMTP server while keeping the per-message ledger in Redis,
`flush` writes the batch's outcome in one transaction (responses, counters, quota), and the
reconciler (`reconcile`) settles batches whose worker died, finishes mailings and keeps the queue
moving. The invariants in docs/ARCHITECTURE.md ("Sending and its invariants") hold because:

- a batch is claimed by one conditional UPDATE (row locks with SKIP LOCKED on PostgreSQL), so two
  workers never hold the same recipient;
- a recipient leaves Planned only through `flush` or the reconciler, each of which first moves the
  batch out of state "claimed" with a conditional UPDATE: exactly one of them records the outcome;
- the ledger refuses appends once the reconciler fenced the batch, so no message leaves after the
  batch was settled, and the one message in flight at a crash is recorded Unknown, never resent;
- every ~1 s the sender commits what it knows so far (`_flush_progress`, behind the same
  conditional UPDATE) and the bound it may hand off to before the next one, so a ledger lost with
  its worker leaves at most that last second in doubt, never the whole batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import and_, bindparam, exists, func, or_, select, update

from app.domain import backoff, eligibility
from app.domain.bounces import classify_reply
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.domain.thresholds import (
    Thresholds,
    interrupt_reason,
    quota_left,
    render_failures_stop,
)
from app.extensions import db
from app.models import (
    Contact,
    Mailing,
    MailingVersion,
    QuotaUsage,
    Recipient,
    SendBatch,
    TypeOptOut,
    utcnow,
)
from app.providers.rate import RateLimiter, provider_settings
from app.providers.smtp import ConnectionLost, Outcome, SmtpSettings, SmtpTransport
from app.services import settings, totals, windows
from app.services.ledger import (
    ALIVE_TTL,
    Ledger,
    LedgerRefused,
    discard,
    fence_and_read,
    handing_off_entry,
    is_alive,
    refused_entry,
    sent_entry,
)
from app.services.ledger import exists as ledger_exists
from app.services.rendering import TemplateProblem, builder_for, merge_data, new_message_id
from app.services.tokens import recipient_token

log = logging.getLogger("sendboard.sending")

RT = Recipient.__table__
CANCEL_CHECK_EVERY = 0.2  # seconds: cancel stops a batch within about this long
HEARTBEAT_EVERY = 1.0
CONNECT_RETRIES = (1.0, 2.0, 4.0)  # backoff before giving up on an unreachable SMTP server
# A ledger missing this soon after Redis started may belong to a live sender that has not marked
# its batch alive again yet (it does every HEARTBEAT_EVERY): the reconciler waits that long. Too
# short would only cost Unknowns (a live sender is fenced off), never a second copy.
LOST_LEDGER_GRACE = 5  # seconds of Redis uptime: five heartbeats
PROGRESS_EVERY = 1.0  # seconds between a sender's partial flushes
WINDOW_MIN = 20  # recipients a sender may always go past its last partial flush


def stop_key(mailing_id: int) -> str:
    """Set when a mailing is canceled or interrupted; senders check it between messages."""
    return f"sb:stop:{mailing_id}"


def refusing_key(rate_key: str) -> str:
    """Since when (Unix time) every attempt on this SMTP server was refused for now; deleted by
    the first message it takes or refuses for good."""
    return f"sb:refusing:{rate_key}"


# ---------------------------------------------------------------- deferral


@dataclass(frozen=True)
class Deferral:
    """How deferred recipients are retried: the backoff's unit and the age at which to give up."""

    max_age: timedelta
    unit: timedelta
    outage: float  # seconds of nothing but temporary refusals before the mailing is interrupted

    @classmethod
    def current(cls) -> Deferral:
        return cls(
            max_age=timedelta(hours=float(settings.get("defer_max_hours"))),
            unit=timedelta(seconds=float(current_app.config["DEFER_UNIT_SECONDS"])),
            outage=60.0 * float(settings.get("outage_minutes")),
        )

    def decide(self, *, attempts: int, first: datetime | None, now: datetime,
               ) -> tuple[int, datetime, datetime | None]:
        """After one more temporary refusal: (attempts, first refusal, next attempt or None to
        give up and record a Soft bounce)."""
        attempts += 1
        first = first or now
        return attempts, first, backoff.next_attempt(
            attempt=attempts, first_deferred=first, now=now, max_age=self.max_age, unit=self.unit)


def _in_flight(batch_id: int) -> Any:
    """A batch's recipients not recorded yet: Planned, or Deferred and held by it (a claimed
    deferred recipient has no next attempt time until its new outcome is recorded)."""
    return and_(RT.c.batch_id == batch_id, or_(
        RT.c.response == Response.PLANNED.value,
        and_(RT.c.response == Response.DEFERRED.value, RT.c.next_attempt_at.is_(None)),
    ))


# ---------------------------------------------------------------- provider and limits

# Which server and how fast: app/providers/rate.py (the limiter is shared by all workers).


def _month(now: datetime) -> str:
    return now.strftime("%Y-%m")


def quota_remaining(now: datetime) -> int | None:
    quota = int(settings.get("monthly_quota")) or None
    used = db.session.get(QuotaUsage, _month(now))
    return quota_left(quota=quota, used_this_month=used.used if used else 0)


# ---------------------------------------------------------------- claiming


@dataclass
class Claim:
    batch_id: int
    mailing_id: int
    size: int
    reach: int = 0  # the sender hands off none of the batch past this position (see _Progress)


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
    for mailing_id in sending_queue() if only is None else [only]:
        mailing = db.session.get(Mailing, mailing_id)
        if mailing is None or mailing.status != Status.SENDING.value:
            continue
        if mailing.send_until is not None and now >= mailing.send_until:
            expire(mailing_id)
            continue
        if not windows.open_now(mailing, now):
            continue  # outside its send window: nothing claimed; the tick comes back
        left = quota_remaining(now)
        if left == 0:
            quota = int(settings.get("monthly_quota"))
            interrupt(mailing_id, f"the monthly sending quota of {quota:,} messages is used up")
            continue
        size = int(settings.get("batch_size"))
        if left is not None:
            size = min(size, left)
        claim = _claim_rows(redis, mailing_id, size, worker)
        if claim is not None:
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
    batch.handoff_reach = min(claimed, _window)  # the first bound of _Progress, committed with the claim
    db.session.commit()
    return Claim(batch.id, mailing_id, claimed, batch.handoff_reach)


# ---------------------------------------------------------------- sending one batch


@dataclass
class BatchOutcome:
    sent: dict[int, tuple[str, datetime, dict[str, Any]]] = field(default_factory=dict)
    final: dict[int, tuple[Response, str]] = field(default_factory=dict)  # not sent, with detail
    stop: str | None = None  # stopped | expired | smtp | template | redis | fenced | yield
    refused: int = 0  # refused by the SMTP server at hand-off: they count as attempts
    stop_detail: str = ""
    recorded: tuple[int, int, int] = (0, 0, 0)  # sent, final, refused already in the database
    # Deferred ones: id -> (attempts, first refusal, next attempt); and where each row came from
    deferrals: dict[int, tuple[int, datetime, datetime]] = field(default_factory=dict)
    origin: dict[int, Response] = field(default_factory=dict)


@dataclass
class _Row:
    id: int
    address: str
    contact_id: int | None
    name: str
    fields: dict[str, Any] | None
    facts: eligibility.ContactFacts | None
    response: Response = Response.PLANNED
    attempts: int = 0
    first_deferred_at: datetime | None = None
    variant_id: int | None = None  # an A/B test's variant: its subject and from-name


def _load_rows(batch_id: int, email_type_id: int | None) -> list[_Row]:
    opted_out = (
        exists().where(TypeOptOut.contact_id == Contact.id,
                       TypeOptOut.email_type_id == email_type_id)
        if email_type_id is not None else None
    )
    columns = [RT.c.id, RT.c.address, RT.c.contact_id, Contact.name, Contact.fields,
               Contact.do_not_email, Contact.valid, Contact.last_transaction_at,
               Contact.created_at, RT.c.response, RT.c.attempts, RT.c.first_deferred_at,
               RT.c.variant_id]
    if opted_out is not None:
        columns.append(opted_out.label("opted_out"))
    stmt = (
        select(*columns)
        .select_from(RT.outerjoin(Contact.__table__, Contact.id == RT.c.contact_id))
        .where(_in_flight(batch_id))
        .order_by(RT.c.id)
    )
    rows = []
    for r in db.session.execute(stmt):
        facts = None
        if r.contact_id is not None and r.created_at is not None:
            out = bool(r.opted_out) if opted_out is not None else False
            facts = eligibility.ContactFacts(
                address=r.address, do_not_email=bool(r.do_not_email), valid=bool(r.valid),
                opted_out_types=frozenset({email_type_id}) if out and email_type_id else frozenset(),
                last_transaction=r.last_transaction_at, created=r.created_at,
            )
        rows.append(_Row(r.id, r.address, r.contact_id, r.name or "", r.fields, facts,
                         Response(r.response), r.attempts or 0, r.first_deferred_at,
                         r.variant_id))
    return rows


_transports: dict[SmtpSettings, SmtpTransport] = {}


def _transport(s: SmtpSettings) -> SmtpTransport:
    """One connection per worker process and server, reused across batches."""
    transport = _transports.get(s)
    if transport is None:
        transport = _transports[s] = SmtpTransport(s)
    return transport


def send_claim(redis: Redis, claim: Claim,
               step_aside: Callable[[], bool] | None = None) -> BatchOutcome:
    """Hand over every message of a claimed batch, then flush the outcome to the database.

    `step_aside`, asked between messages, ends the batch early (the rest goes back in the queue)
    so this worker can run periodic work that is waiting: the tick that settles crashed batches
    must not wait for a long batch to finish.
    """
    mailing = db.session.get(Mailing, claim.mailing_id)
    assert mailing is not None
    version = db.session.execute(
        select(MailingVersion).where(MailingVersion.mailing_id == mailing.id)
        .order_by(MailingVersion.id.desc()).limit(1)
    ).scalar_one()
    rows = _load_rows(claim.batch_id, mailing.email_type_id)
    send_until = mailing.send_until
    window_closes = windows.closes_at(mailing, utcnow())  # the rest waits for the next opening
    email_type_id = mailing.email_type_id
    transactional = bool(mailing.email_type and mailing.email_type.transactional)
    version_id, content = version.id, version.content
    db.session.commit()  # end the read transaction: no database lock is held while sending

    outcome = BatchOutcome()
    try:
        builder = builder_for(version_id, content)
    except TemplateProblem as exc:
        outcome.stop, outcome.stop_detail = "template", str(exc)
        flush(redis, claim, outcome, version_id)
        return outcome
    smtp, rate_key, rate = provider_settings()
    transport = _transport(smtp)
    limiter = RateLimiter(redis, rate_key, rate)
    ledger = Ledger(redis, claim.batch_id)
    secret = current_app.config["SECRET_KEY"]
    inactivity_days = int(settings.get("inactivity_days"))
    inactivity = timedelta(days=inactivity_days) if inactivity_days > 0 else None
    domain = content.get("domain") or "sendboard.local"
    pending: list[str] = []  # "sent" entries, appended together with the next hand-off
    next_check = 0.0
    deferral = Deferral.current()
    refusing = _Refusing(redis, rate_key)
    counters = totals.get(claim.mailing_id)
    failed_before = counters.get("delivery_errors", 0)
    tried_before = (counters.get("handed_off", 0) + counters.get("refused", 0)
                    + failed_before)
    render_failed: dict[int, str] = {}

    # The batch stays marked alive from a side thread for as long as this worker is on it, also
    # through one slow hand-off (an SMTP timeout and its retries outlast ALIVE_TTL). The thread
    # dies with the process, so a killed worker's batch still lapses and is reconciled.
    heartbeat = _Heartbeat(ledger)
    heartbeat.start()
    progress = _Progress(claim, outcome, version_id)
    try:
        try:
            for position, row in enumerate(rows):
                outcome.origin[row.id] = row.response
                mono = time.monotonic()
                if progress.due(position, mono) and not progress.flush(position, mono):
                    outcome.stop = "fenced"  # settled by the reconciler: nothing more to record
                    return outcome
                if mono >= next_check:
                    next_check = mono + CANCEL_CHECK_EVERY
                    if redis.exists(stop_key(claim.mailing_id)):
                        outcome.stop = "stopped"
                        break
                    if step_aside is not None and step_aside():
                        outcome.stop = "yield"
                        break
                now = utcnow()
                if window_closes is not None and now >= window_closes:
                    outcome.stop = "yield"
                    break
                if send_until is not None and now >= send_until:
                    outcome.stop = "expired"
                    break
                if row.facts is not None:
                    verdict = eligibility.check(row.facts, email_type=email_type_id, now=now,
                                                inactivity=inactivity,
                                                transactional=transactional)
                    if verdict is not None:
                        outcome.final[row.id] = (verdict, "checked again right before hand-off")
                        continue
                elif not eligibility.is_valid_address(row.address):
                    outcome.final[row.id] = (Response.INVALID_ADDRESS, "")
                    continue
                token = recipient_token(row.id, secret)
                message_id = new_message_id(row.id, domain)
                sent_at = now.replace(microsecond=0)
                merge = merge_data(row.name, row.address, row.fields, row.variant_id)
                try:
                    built = builder.build(merge=merge, address=row.address, token=token,
                                          message_id=message_id, sent_at=sent_at)
                except TemplateProblem as exc:
                    # Held back: Delivery error when the batch ends, unless failures pass the
                    # limit, which interrupts the mailing and leaves them to a resume.
                    render_failed[row.id] = str(exc)
                    if render_failures_stop(failed=failed_before + len(render_failed),
                                            tried=tried_before + position + 1):
                        outcome.stop = "template"
                        outcome.stop_detail = (
                            f"{failed_before + len(render_failed):,} messages could not be built "
                            f"(last: {exc})")
                        render_failed.clear()
                        break
                    continue
                limiter.wait()
                ledger.append(*pending, handing_off_entry(row.id))
                pending = []
                result = _hand_over(transport, built.envelope_from, row.address, built.data, outcome)
                if result is None:  # connection lost: outcome.stop says why
                    if outcome.stop == "ambiguous":
                        outcome.final[row.id] = (Response.UNKNOWN, outcome.stop_detail)
                        outcome.stop = "smtp"
                    break
                if result.outcome is Outcome.ACCEPTED:
                    refusing.clear()
                    outcome.sent[row.id] = (message_id, sent_at, merge)
                    pending.append(sent_entry(row.id, sent_at, message_id))
                elif result.outcome is Outcome.REFUSED_PERMANENT:
                    refusing.clear()
                    detail = f"{result.code} {result.text}"
                    # Hard only when the reply says the address itself is bad (RFC 3463).
                    response = (classify_reply(result.code, result.text).response
                                or Response.SOFT_BOUNCE)
                    outcome.final[row.id] = (response, detail)
                    outcome.refused += 1
                    pending.append(refused_entry(row.id, response, detail))
                else:
                    # Refused for now: Deferred until its next attempt, or a Soft bounce once the
                    # refusals have lasted the maximum age. Recorded in the ledger like a refusal,
                    # so a crash settles it as Deferred (retried after its backoff), never Unknown.
                    detail = f"{result.code} {result.text}"
                    if backoff.is_slow_down(result.code, result.text):
                        rate_now = limiter.slow_down()
                        log.warning("%s asked to slow down (%s): %.1f messages/s for now",
                                    smtp.label, detail, rate_now)
                    attempts, first, next_at = deferral.decide(
                        attempts=row.attempts, first=row.first_deferred_at, now=now)
                    if next_at is None:
                        outcome.final[row.id] = (Response.SOFT_BOUNCE, detail)
                        outcome.refused += 1
                        pending.append(refused_entry(row.id, Response.SOFT_BOUNCE, detail))
                    else:
                        outcome.final[row.id] = (Response.DEFERRED, detail)
                        outcome.deferrals[row.id] = (attempts, first, next_at)
                        pending.append(refused_entry(row.id, Response.DEFERRED, detail))
                    lasted = refusing.refused()
                    if lasted >= deferral.outage:
                        outcome.stop = "smtp"
                        outcome.stop_detail = (
                            f"{smtp.label} refused every message for now for "
                            f"{lasted / 60:.0f} minutes (last: {result.code} {result.text})"
                        )
                        break
            if pending:
                ledger.append(*pending)
            for rid, problem in render_failed.items():
                outcome.final[rid] = (Response.DELIVERY_ERROR, problem)
        except LedgerRefused as exc:
            if exc.reason == "fenced":
                log.warning("batch %s was taken over by the reconciler; stopping", claim.batch_id)
                outcome.stop = "fenced"
                return outcome
            outcome.stop, outcome.stop_detail = "redis", "the Redis hand-off record was lost"
        except RedisError as exc:
            outcome.stop, outcome.stop_detail = "redis", f"Redis failed: {exc}"
        flush(redis, claim, outcome, version_id)
        return outcome
    finally:
        heartbeat.stop()


_window = WINDOW_MIN  # recipients this process hands off in ~PROGRESS_EVERY, last measured


class _Progress:
    """When a sender flushes partially, and how far it may go before the next flush.

    The batch's rows are sent in id order. `reach` (SendBatch.handoff_reach, committed with the claim
    and with every partial flush) is the position the sender may not hand off at or past before it
    has committed a new one; it lies about one second of sending ahead. If the ledger is lost with
    the worker, the reconciler marks Unknown only the rows still Planned below that bound.
    """

    def __init__(self, claim: Claim, outcome: BatchOutcome, version_id: int) -> None:
        self.claim, self.outcome, self.version_id = claim, outcome, version_id
        self.reach = claim.reach
        self.mark = (time.monotonic(), 0)  # time and position of the last flush
        self.next_at = self.mark[0] + PROGRESS_EVERY

    def due(self, position: int, mono: float) -> bool:
        return position >= self.reach or mono >= self.next_at

    def flush(self, position: int, mono: float) -> bool:
        """Record everything before `position` and a new bound; False once the batch is settled."""
        global _window
        last_mono, last_position = self.mark
        if position > last_position and mono > last_mono:
            rate = (position - last_position) / (mono - last_mono)
            _window = max(WINDOW_MIN, int(rate * PROGRESS_EVERY) + 1)
        reach = position + _window
        if not _flush_progress(self.claim, self.outcome, self.version_id, reach):
            return False
        self.reach, self.mark, self.next_at = reach, (mono, position), mono + PROGRESS_EVERY
        return True


class _Heartbeat:
    """Refreshes a batch's alive mark every HEARTBEAT_EVERY seconds until stopped."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"heartbeat-{ledger.batch_id}")

    def _run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_EVERY):
            try:
                self._ledger.heartbeat()
            except RedisError as exc:  # the sender meets the same failure and stops
                log.warning("heartbeat of batch %s failed: %s", self._ledger.batch_id, exc)

    def start(self) -> None:
        self._thread.start()  # the claim set the first mark (Ledger.open)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=HEARTBEAT_EVERY * 5)


def _hand_over(transport: SmtpTransport, envelope_from: str, address: str, data: bytes,
               outcome: BatchOutcome) -> Any:
    """Send one message, retrying connection failures with backoff. A 4xx reply is returned as
    it is: the recipient is deferred and tried again later, on its own backoff."""
    connects = list(CONNECT_RETRIES)
    while True:
        try:
            result = transport.send(envelope_from, address, data)
        except ConnectionLost as exc:
            if exc.ambiguous:
                outcome.stop, outcome.stop_detail = "ambiguous", f"connection lost: {exc}"
                return None
            if not connects:
                outcome.stop, outcome.stop_detail = "smtp", str(exc)
                return None
            time.sleep(connects.pop(0))
            continue
        return result


class _Refusing:
    """How long every attempt on one SMTP server has been refused for now, across workers."""

    def __init__(self, redis: Redis, rate_key: str) -> None:
        self.redis, self.key = redis, refusing_key(rate_key)
        self.cleared = 0.0  # when this sender last cleared it (at most once a second)

    def clear(self) -> None:
        mono = time.monotonic()
        if mono - self.cleared >= 1.0:
            self.redis.delete(self.key)
            self.cleared = mono

    def refused(self) -> float:
        """Note one more temporary refusal; seconds since the first one of this run."""
        now = time.time()
        self.redis.set(self.key, now, nx=True, ex=7 * 24 * 3600)
        self.cleared = 0.0
        first = self.redis.get(self.key)
        return backoff.all_refused_for(float(first) if first is not None else None, now)


# ---------------------------------------------------------------- recording the outcome


def flush(redis: Redis | None, claim: Claim, outcome: BatchOutcome, version_id: int) -> bool:
    """Record a batch's outcome in one transaction; False if the reconciler got there first."""
    now = utcnow()
    won = db.session.execute(
        update(SendBatch)
        .where(SendBatch.id == claim.batch_id, SendBatch.state == "claimed")
        .values(state="done", finished_at=now)
    ).rowcount
    if not won:
        db.session.rollback()
        return False
    mailing = db.session.get(Mailing, claim.mailing_id)
    assert mailing is not None
    moves, handed_off, refused = _record_new(outcome, version_id, now)
    # The rest of the batch was not tried: canceled with the mailing, else back in the queue.
    rest_response = None
    if mailing.status == Status.CANCELED.value:
        rest_response = Response.CANCELED
    elif outcome.stop == "expired":
        rest_response = Response.EXPIRED
    _release_rest(claim.batch_id, rest_response, now, moves)
    _count_moves(claim.mailing_id, moves, handed_off=handed_off, now=now)
    if refused:
        totals.bump(claim.mailing_id, {"refused": refused})
    db.session.commit()
    if redis is not None:
        try:
            Ledger(redis, claim.batch_id).close()
        except RedisError:
            pass  # an orphan record expires by itself
    after_batch(claim.mailing_id, outcome)
    return True


def _release_rest(batch_id: int, rest_response: Response | None, now: datetime,
                  moves: Counter[str], only: list[int] | None = None) -> None:
    """The batch's recipients not tried (all of them, or those in `only`): given `rest_response`,
    or back in the queue: Planned ones unclaimed, Deferred ones due again at once."""
    for origin in (Response.PLANNED, Response.DEFERRED):
        rest = and_(_in_flight(batch_id), RT.c.response == origin.value)
        if only is not None:
            rest = and_(rest, RT.c.id.in_(only))
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


def _flush_progress(claim: Claim, outcome: BatchOutcome, version_id: int, reach: int) -> bool:
    """A partial flush: commit the outcomes known so far and the sender's new bound (`_Progress`).

    Recipients recorded here are no longer Planned, so neither the final `flush` nor the
    reconciler's `_settle` touches them again. The conditional UPDATE comes first, as in `flush`:
    it takes the batch row's lock (PostgreSQL) or the database's write lock (SQLite), so this and
    the reconciler's own UPDATE of the batch run one after the other. If the reconciler moved the
    batch out of "claimed" first, nothing is recorded and the sender stops; if this commits first,
    the reconciler reads these recipients as no longer Planned and the new bound.
    """
    now = utcnow()
    won = db.session.execute(
        update(SendBatch)
        .where(SendBatch.id == claim.batch_id, SendBatch.state == "claimed")
        .values(handoff_reach=reach)
    ).rowcount
    if not won:
        db.session.rollback()
        return False
    moves, handed_off, refused = _record_new(outcome, version_id, now)
    _count_moves(claim.mailing_id, moves, handed_off=handed_off, now=now)
    if refused:
        totals.bump(claim.mailing_id, {"refused": refused})
    db.session.commit()
    return True


def _record_new(outcome: BatchOutcome, version_id: int,
                now: datetime) -> tuple[Counter[str], int, int]:
    """Record the outcomes no flush has recorded yet; returns the moves, hand-offs and refusals.

    `outcome.sent` and `outcome.final` only grow, in the order the rows were sent, so what is
    recorded is a prefix of each; `outcome.recorded` counts those prefixes (and the refusals).
    """
    done_sent, done_final, done_refused = outcome.recorded
    sent = list(outcome.sent.items())[done_sent:]
    final = dict(list(outcome.final.items())[done_final:])
    moves: Counter[str] = Counter()
    if sent:
        _record_sent([{"rid": rid, "mid": mid, "at": at, "merge": merge}
                      for rid, (mid, at, merge) in sent], version_id, now)
        for rid, _ in sent:
            _move(moves, outcome.origin.get(rid, Response.PLANNED), Response.SENT)
    _record_final(final, now, moves, outcome.origin, outcome.deferrals)
    outcome.recorded = (len(outcome.sent), len(outcome.final), outcome.refused)
    return moves, len(sent), outcome.refused - done_refused


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
    plain = [{"rid": rid, "resp": resp.value, "detail": detail[:2000],
              "reason": _reason(detail) if resp is Response.SOFT_BOUNCE else ""}
             for rid, (resp, detail) in final.items() if rid not in deferrals]
    if plain:
        db.session.execute(
            update(RT).where(RT.c.id == bindparam("rid")).values(
                response=bindparam("resp"), response_at=now, detail=bindparam("detail"),
                reason=bindparam("reason"), crash_unknown=False, next_attempt_at=None,
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


def after_batch(mailing_id: int, outcome: BatchOutcome) -> None:
    """Interrupt on an outage or a passed threshold; finish when nothing is left."""
    if outcome.stop in {"smtp", "template"}:
        interrupt(mailing_id, outcome.stop_detail or "the SMTP server failed")
        return
    if outcome.stop == "redis":
        return  # the reconciler re-enqueues sending once Redis is back
    counters = totals.get(mailing_id)
    limits = Thresholds(
        bounce_rate=float(settings.get("bounce_rate_limit")),
        complaint_rate=float(settings.get("complaint_rate_limit")),
        min_sample=int(settings.get("threshold_min_sample")),
    )
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


# ---------------------------------------------------------------- mailing state changes


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
    """Sending -> Interrupted with the reason; the rest stays Planned for a resume."""
    changed = db.session.execute(
        update(Mailing)
        .where(Mailing.id == mailing_id,
               Mailing.status.in_([Status.SENDING.value, Status.PREPARING.value]))
        .values(status=Status.INTERRUPTED.value, status_reason=reason[:2000],
                interrupted_at=utcnow())
    ).rowcount
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
    """The send-until deadline passed: the rest is Stopped (expired) and the mailing ends."""
    cancel_unclaimed(mailing_id, Response.EXPIRED)
    db.session.execute(
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
    changed = db.session.execute(
        update(Mailing).where(Mailing.id == mailing_id, Mailing.status == Status.SENDING.value)
        .values(status=Status.SENT.value, finished_at=utcnow())
    ).rowcount
    db.session.commit()
    if changed:
        log.info("mailing %s sent", mailing_id)
        from app.services.chains import on_parent_sent

        on_parent_sent(mailing_id)
    return bool(changed)


# ---------------------------------------------------------------- recovery


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
    record = fence_and_read(redis, batch_id)
    now = utcnow()
    won = db.session.execute(
        update(SendBatch).where(SendBatch.id == batch_id, SendBatch.state == "claimed")
        .values(state="settled", finished_at=now)
    ).rowcount
    if not won:
        db.session.rollback()
        return False
    mailing = db.session.get(Mailing, mailing_id)
    assert mailing is not None
    version_id = db.session.execute(
        select(func.max(MailingVersion.id)).where(MailingVersion.mailing_id == mailing_id)
    ).scalar_one()
    # Only recipients not recorded yet: those a partial flush recorded are settled already.
    rows = db.session.execute(
        select(RT.c.id, RT.c.address, Contact.name, Contact.fields, RT.c.response, RT.c.attempts,
               RT.c.first_deferred_at)
        .select_from(RT.outerjoin(Contact.__table__, Contact.id == RT.c.contact_id))
        .where(_in_flight(batch_id))
    ).all()
    doubtful: set[int] = set()
    if record.lost:
        # No record: in doubt are the rows below the sender's last committed bound (read after
        # the UPDATE above, so no partial flush can raise it any more); the rest were never tried.
        # A bound of 0 comes from a claim made before bounds were kept: the whole batch.
        reach = db.session.execute(
            select(SendBatch.handoff_reach).where(SendBatch.id == batch_id)).scalar_one()
        below = select(RT.c.id).where(RT.c.batch_id == batch_id).order_by(RT.c.id)
        doubtful = set(db.session.execute(below.limit(reach) if reach else below).scalars())
    moves: Counter[str] = Counter()
    sent_rows, unknown_ids, rest_ids = [], [], []
    refused: dict[int, tuple[Response, str]] = {}
    origin = {r.id: Response(r.response) for r in rows}
    deferrals: dict[int, tuple[int, datetime, datetime]] = {}
    deferral = Deferral.current()
    for r in rows:
        if r.id in doubtful or r.id in record.ambiguous:
            unknown_ids.append(r.id)
        elif r.id in record.sent:
            mid, at = record.sent[r.id]
            sent_rows.append({"rid": r.id, "mid": mid, "at": at,
                              "merge": merge_data(r.name or "", r.address, r.fields)})
        elif r.id in record.refused:
            refused[r.id] = record.refused[r.id]  # what the server answered, not Unknown
            if refused[r.id][0] is Response.DEFERRED:  # refused for now: on to its backoff
                attempts, first, next_at = deferral.decide(
                    attempts=r.attempts or 0, first=r.first_deferred_at, now=now)
                if next_at is None:
                    refused[r.id] = (Response.SOFT_BOUNCE, refused[r.id][1])
                else:
                    deferrals[r.id] = (attempts, first, next_at)
        else:
            rest_ids.append(r.id)
    if sent_rows:
        _record_sent(sent_rows, version_id, now)
        for row in sent_rows:
            _move(moves, origin[row["rid"]], Response.SENT)
    _record_final(refused, now, moves, origin, deferrals)
    if len(refused) > len(deferrals):
        totals.bump(mailing_id, {"refused": len(refused) - len(deferrals)})
    if unknown_ids:
        detail = ("the Redis hand-off record was lost with the worker" if record.lost
                  else "the worker stopped during this hand-off; it may have been delivered")
        db.session.execute(
            update(RT).where(RT.c.id.in_(unknown_ids)).values(
                response=Response.UNKNOWN.value, response_at=now, crash_unknown=True,
                detail=detail, next_attempt_at=None, updated_at=now,
            )
        )
        for rid in unknown_ids:
            _move(moves, origin[rid], Response.UNKNOWN)
    if rest_ids:
        canceled = mailing.status == Status.CANCELED.value
        _release_rest(batch_id, Response.CANCELED if canceled else None, now, moves,
                      only=rest_ids)
    _count_moves(mailing_id, moves, handed_off=len(sent_rows), now=now)
    db.session.commit()
    log.warning("settled abandoned batch %s: %d sent, %d refused, %d unknown, %d back in the queue",
                batch_id, len(sent_rows), len(refused), len(unknown_ids), len(rest_ids))
    return True


def deferred_summary(mailing_id: int) -> tuple[int, datetime | None]:
    """How many recipients are Deferred, and the earliest next attempt among them."""
    count, soonest = db.session.execute(
        select(func.count(), func.min(RT.c.next_attempt_at))
        .where(RT.c.mailing_id == mailing_id, RT.c.response == Response.DEFERRED.value)
    ).one()
    return int(count or 0), soonest


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


def has_work() -> bool:
    """Is any mailing sending with recipients still Planned?"""
    row = db.session.execute(
        select(Mailing.id).where(Mailing.status == Status.SENDING.value).limit(1)
    ).first()
    return row is not None


__all__ = [
    "ALIVE_TTL",
    "Claim",
    "RateLimiter",
    "claim_batch",
    "finish_if_done",
    "flush",
    "has_work",
    "interrupt",
    "provider_settings",
    "send_claim",
    "settle_abandoned",
    "stop_key",
]

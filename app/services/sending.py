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
from collections import Counter, deque
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
from app.providers.relay import Relay, default_relay
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
# Seconds between two tries of a relay that cannot be used (the last one repeats) until every try
# has failed for the outage window (SENDBOARD_OUTAGE_MINUTES): then the mailing is interrupted.
RECONNECT_BACKOFF = (0.5, 1.0, 2.0, 4.0)
CONFIG_TRIES = 3  # tries of a relay whose certificate, STARTTLS or login fails, then interrupt
MIN_PER_CONNECTION = 8  # a batch of fewer rows than this per connection opens fewer connections
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


def claim_batch(redis: Redis, worker: str) -> Claim | None:
    """Claim the next batch of the oldest sending mailing; None when nothing is left to send."""
    now = utcnow()
    for mailing_id in sending_queue():
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


# One worker sends a batch over several SMTP connections at once (the relay's `connections`), one
# thread each. The connections of a process are kept from one batch to the next.
_pools: dict[SmtpSettings, list[SmtpTransport]] = {}
_pools_lock = threading.Lock()
_transports = _pools  # tests clear it to start from fresh connections


def _checkout(s: SmtpSettings, count: int) -> list[SmtpTransport]:
    """`count` connections to `s` for one batch: kept ones first, new ones for the rest."""
    with _pools_lock:
        pool = _pools.setdefault(s, [])
        taken = pool[:count]
        del pool[:count]
    return taken + [SmtpTransport(s) for _ in range(count - len(taken))]


def _checkin(s: SmtpSettings, transports: list[SmtpTransport]) -> None:
    with _pools_lock:
        _pools.setdefault(s, []).extend(transports)


def close_connections() -> None:
    """Close every kept SMTP connection of this process."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        for transport in pool:
            transport.close()


def _lasted(seconds: float) -> str:
    if seconds >= 90:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"


class _Dispatch:
    """Hands the batch's rows to the connections, in id order and never at or past the bound
    (`reach`) the last partial flush committed; a row a connection could not hand over goes back
    to the front. The first stop reason wins and ends every connection after its message."""

    def __init__(self, rows: list[_Row], reach: int) -> None:
        self.rows = rows
        self.position = 0  # rows handed out so far
        self.back: deque[_Row] = deque()
        self.reach = reach
        self.cond = threading.Condition()
        self.stop: str | None = None
        self.stop_detail = ""

    def take(self) -> _Row | None:
        """The next row to hand off; None when the batch is done or stopped."""
        with self.cond:
            while True:
                if self.stop is not None:
                    return None
                if self.back:
                    return self.back.popleft()
                if self.position >= len(self.rows):
                    return None
                if self.position < self.reach:
                    self.position += 1
                    return self.rows[self.position - 1]
                self.cond.notify_all()  # the sender's thread flushes and moves the bound
                self.cond.wait(0.05)

    def give_back(self, row: _Row) -> None:
        with self.cond:
            self.back.appendleft(row)
            self.cond.notify_all()

    def finished(self) -> bool:
        with self.cond:
            return self.stop is not None or (not self.back and self.position >= len(self.rows))

    def halt(self, reason: str, detail: str = "") -> None:
        with self.cond:
            if self.stop is None:
                self.stop, self.stop_detail = reason, detail
            self.cond.notify_all()

    def move_reach(self, reach: int) -> None:
        with self.cond:
            self.reach = reach
            self.cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the batch stops meanwhile."""
        with self.cond:
            self.cond.wait_for(lambda: self.stop is not None, timeout=seconds)

    def wait(self, seconds: float) -> None:
        with self.cond:
            self.cond.wait(seconds)


@dataclass
class _Batch:
    """What every connection of one batch shares (read-only but for `outcome` and `dispatch`)."""

    claim: Claim
    relay: Relay
    builder: Any
    dispatch: _Dispatch
    outcome: BatchOutcome
    ledger: Ledger
    redis: Redis
    deferral: Deferral
    secret: str
    domain: str
    send_until: datetime | None
    email_type_id: int | None
    inactivity: timedelta | None
    failed_before: int
    tried_before: int
    render_failed: dict[int, str] = field(default_factory=dict)
    window_closes: datetime | None = None  # the send window's end: the rest waits for it
    transactional: bool = False  # the email type's rule (app.domain.eligibility)


class _Connection(threading.Thread):
    """One SMTP connection of a batch: takes rows from the dispatch and hands each over once.

    Before a message's DATA it appends "handing off" to the ledger, together with the answers of
    its previous messages; a connection that dies during DATA costs its own message as Unknown
    and opens again. A relay that cannot be reached is tried again on a backoff, and interrupts
    the mailing only when every attempt on it has failed for the outage window.
    """

    def __init__(self, batch: _Batch, transport: SmtpTransport, number: int) -> None:
        super().__init__(daemon=True, name=f"batch-{batch.claim.batch_id}-smtp-{number}")
        self.batch = batch
        self.transport = transport
        self.limiter = RateLimiter(batch.redis, batch.relay.rate_key, batch.relay.rate)
        self.refusing = _Refusing(batch.redis, batch.relay.rate_key)
        self.pending: list[str] = []  # answers, appended with the next hand-off
        self.failures = 0  # connection failures in a row
        self.error: BaseException | None = None

    def run(self) -> None:
        dispatch = self.batch.dispatch
        try:
            try:
                self._run()
            finally:
                if self.pending:
                    self.batch.ledger.append(*self.pending)
                    self.pending = []
        except LedgerRefused as exc:
            if exc.reason == "fenced":
                dispatch.halt("fenced")
            else:
                dispatch.halt("redis", "the Redis hand-off record was lost")
        except RedisError as exc:
            dispatch.halt("redis", f"Redis failed: {exc}")
        except BaseException as exc:  # re-raised by the sender after every connection stopped
            self.error = exc
            dispatch.halt("error", str(exc))

    def _run(self) -> None:
        dispatch = self.batch.dispatch
        while True:
            if self.transport.conn is None:
                if dispatch.finished():
                    return
                try:
                    self.transport.open()
                except ConnectionLost as exc:
                    self._failed(exc)
                    continue
            row = dispatch.take()
            if row is None:
                return
            self._one(row)

    def _failed(self, exc: ConnectionLost) -> None:
        """The relay could not be used: note it, stop the batch past the outage window (or
        after CONFIG_TRIES tries of a relay configured wrong), else wait a little longer each
        time before the next try."""
        if self.pending:
            self.batch.ledger.append(*self.pending)
            self.pending = []
        why = str(exc)
        if exc.misconfigured and self.failures + 1 >= CONFIG_TRIES:
            self.batch.dispatch.halt("smtp", why)
            return
        lasted = self.refusing.refused()
        if lasted >= self.batch.deferral.outage:
            self.batch.dispatch.halt("smtp", f"{self.batch.relay.label} could not be used for "
                                             f"{_lasted(lasted)} (last: {why})")
            return
        delay = RECONNECT_BACKOFF[min(self.failures, len(RECONNECT_BACKOFF) - 1)]
        self.failures += 1
        log.warning("%s (trying again in %.1f s)", why, delay)
        self.batch.dispatch.pause(delay)

    def _one(self, row: _Row) -> None:
        b, outcome, dispatch = self.batch, self.batch.outcome, self.batch.dispatch
        now = utcnow()
        if b.window_closes is not None and now >= b.window_closes:
            dispatch.give_back(row)
            dispatch.halt("yield")
            return
        if b.send_until is not None and now >= b.send_until:
            dispatch.give_back(row)
            dispatch.halt("expired")
            return
        if row.facts is not None:
            verdict = eligibility.check(row.facts, email_type=b.email_type_id, now=now,
                                        inactivity=b.inactivity, transactional=b.transactional)
            if verdict is not None:
                outcome.add_final(row.id, verdict, "checked again right before hand-off")
                return
        elif not eligibility.is_valid_address(row.address):
            outcome.add_final(row.id, Response.INVALID_ADDRESS, "")
            return
        token = recipient_token(row.id, b.secret)
        message_id = new_message_id(row.id, b.domain)
        sent_at = now.replace(microsecond=0)
        merge = merge_data(row.name, row.address, row.fields, row.variant_id)
        try:
            built = b.builder.build(merge=merge, address=row.address, token=token,
                                    message_id=message_id, sent_at=sent_at)
        except TemplateProblem as exc:
            # Held back: Delivery error when the batch ends, unless failures pass the limit,
            # which interrupts the mailing and leaves them to a resume.
            with dispatch.cond:
                b.render_failed[row.id] = str(exc)
                failed = b.failed_before + len(b.render_failed)
                stop = render_failures_stop(failed=failed, tried=b.tried_before + dispatch.position)
            if stop:
                dispatch.halt("template", f"{failed:,} messages could not be built (last: {exc})")
            return
        self.limiter.wait()
        b.ledger.append(*self.pending, handing_off_entry(row.id))
        self.pending = []
        try:
            result = self.transport.send(built.envelope_from, row.address, built.data)
        except ConnectionLost as exc:
            if exc.ambiguous:  # it may have arrived: never sent again
                outcome.add_final(row.id, Response.UNKNOWN, f"connection lost: {exc}")
            else:  # it did not leave: another connection, or this one again, takes it
                dispatch.give_back(row)
            self._failed(exc)
            return
        self.failures = 0
        detail = f"{result.code} {result.text}"
        if result.outcome is Outcome.ACCEPTED:
            self.refusing.clear()
            outcome.add_sent(row.id, message_id, sent_at, merge)
            self.pending.append(sent_entry(row.id, sent_at, message_id))
        elif result.outcome is Outcome.REFUSED_PERMANENT:
            self.refusing.clear()
            # Hard only when the reply says the address itself is bad (RFC 3463).
            response = classify_reply(result.code, result.text).response or Response.SOFT_BOUNCE
            outcome.add_final(row.id, response, detail, refused=True)
            self.pending.append(refused_entry(row.id, response, detail))
        else:
            self._deferred(row, now, detail, result.code, result.text)

    def _deferred(self, row: _Row, now: datetime, detail: str, code: int, text: str) -> None:
        """Refused for now: Deferred until its next attempt, or a Soft bounce once the refusals
        have lasted the maximum age. Recorded in the ledger like a refusal, so a crash settles it
        as Deferred (retried after its backoff), never Unknown."""
        b = self.batch
        if backoff.is_slow_down(code, text):
            rate_now = self.limiter.slow_down()
            log.warning("%s asked to slow down (%s): %.1f messages/s for now",
                        b.relay.label, detail, rate_now)
        attempts, first, next_at = b.deferral.decide(
            attempts=row.attempts, first=row.first_deferred_at, now=now)
        if next_at is None:
            b.outcome.add_final(row.id, Response.SOFT_BOUNCE, detail, refused=True)
            self.pending.append(refused_entry(row.id, Response.SOFT_BOUNCE, detail))
        else:
            b.outcome.add_final(row.id, Response.DEFERRED, detail,
                                deferral=(attempts, first, next_at))
            self.pending.append(refused_entry(row.id, Response.DEFERRED, detail))
        lasted = self.refusing.refused()
        if lasted >= b.deferral.outage:
            b.dispatch.halt("smtp", f"{b.relay.label} refused every message for now for "
                                    f"{_lasted(lasted)} (last: {code} {text})")


def send_claim(redis: Redis, claim: Claim,
               step_aside: Callable[[], bool] | None = None) -> BatchOutcome:
    """Hand over every message of a claimed batch, then flush the outcome to the database.

    The messages go out over the relay's connections at once (`_Connection`); this thread keeps
    the database up to date (`_Progress`), watches for a cancel and asks `step_aside` between
    checks: when it answers yes the batch ends early (the rest goes back in the queue) so this
    worker can run periodic work that is waiting, such as the tick that settles crashed batches.
    """
    mailing = db.session.get(Mailing, claim.mailing_id)
    assert mailing is not None
    version = db.session.execute(
        select(MailingVersion).where(MailingVersion.mailing_id == mailing.id)
        .order_by(MailingVersion.id.desc()).limit(1)
    ).scalar_one()
    rows = _load_rows(claim.batch_id, mailing.email_type_id)
    send_until = mailing.send_until
    email_type_id = mailing.email_type_id
    transactional = bool(mailing.email_type and mailing.email_type.transactional)
    version_id, content = version.id, version.content
    db.session.commit()  # end the read transaction: no database lock is held while sending

    outcome = BatchOutcome()
    outcome.origin.update({row.id: row.response for row in rows})
    try:
        builder = builder_for(version_id, content)
    except TemplateProblem as exc:
        outcome.stop, outcome.stop_detail = "template", str(exc)
        flush(redis, claim, outcome, version_id)
        return outcome
    relay = default_relay()
    inactivity_days = int(settings.get("inactivity_days"))
    counters = totals.get(claim.mailing_id)
    failed_before = counters.get("delivery_errors", 0)
    dispatch = _Dispatch(rows, claim.reach)
    batch = _Batch(
        claim=claim, relay=relay, builder=builder, dispatch=dispatch, outcome=outcome,
        ledger=Ledger(redis, claim.batch_id), redis=redis, deferral=Deferral.current(),
        secret=current_app.config["SECRET_KEY"], domain=content.get("domain") or "sendboard.local",
        send_until=send_until, email_type_id=email_type_id,
        inactivity=timedelta(days=inactivity_days) if inactivity_days > 0 else None,
        failed_before=failed_before,
        tried_before=counters.get("handed_off", 0) + counters.get("refused", 0) + failed_before,
        transactional=transactional,
        window_closes=windows.closes_at(mailing, utcnow()),
    )
    db.session.commit()  # the settings and counters were read in a transaction of their own
    # A few rows do not need every connection: one per MIN_PER_CONNECTION rows, at least one.
    count = max(1, min(relay.connections, len(rows) // MIN_PER_CONNECTION))
    transports = _checkout(relay.smtp, count)
    connections = [_Connection(batch, t, n) for n, t in enumerate(transports)]

    # The batch stays marked alive from a side thread for as long as this worker is on it, also
    # through one slow hand-off (an SMTP timeout and its retries outlast ALIVE_TTL). The thread
    # dies with the process, so a killed worker's batch still lapses and is reconciled.
    heartbeat = _Heartbeat(batch.ledger)
    heartbeat.start()
    progress = _Progress(claim, outcome, version_id)
    try:
        for connection in connections:
            connection.start()
        next_check = 0.0
        fenced = False
        while any(c.is_alive() for c in connections):
            dispatch.wait(0.05)
            mono = time.monotonic()
            if not fenced and progress.due(dispatch.position, mono):
                if progress.flush(dispatch.position, mono):
                    dispatch.move_reach(progress.reach)
                else:  # settled by the reconciler: nothing more to record
                    fenced = True
                    dispatch.halt("fenced")
            if mono >= next_check:
                next_check = mono + CANCEL_CHECK_EVERY
                try:
                    if redis.exists(stop_key(claim.mailing_id)):
                        dispatch.halt("stopped")
                    elif step_aside is not None and step_aside():
                        dispatch.halt("yield")
                except RedisError as exc:
                    dispatch.halt("redis", f"Redis failed: {exc}")
        for connection in connections:
            connection.join()
        for connection in connections:
            if connection.error is not None:
                raise connection.error
        outcome.stop, outcome.stop_detail = dispatch.stop, dispatch.stop_detail
        if outcome.stop == "fenced":
            log.warning("batch %s was taken over by the reconciler; stopping", claim.batch_id)
            return outcome
        if outcome.stop != "template":
            for rid, problem in batch.render_failed.items():
                outcome.add_final(rid, Response.DELIVERY_ERROR, problem)
        flush(redis, claim, outcome, version_id)
        return outcome
    finally:
        heartbeat.stop()
        _checkin(relay.smtp, transports)


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
               RT.c.first_deferred_at, RT.c.variant_id)
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
                              "merge": merge_data(r.name or "", r.address, r.fields,
                                                  r.variant_id)})
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

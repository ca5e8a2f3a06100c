"""Sending one claimed batch: every recipient handed off once, over several SMTP connections.

`send_claim` loads the batch's rows and hands them, in id order, to the relay's connections
(`_Connection`, one thread and one SMTP connection each) through one dispatcher (`_Dispatch`).
Before a message's DATA its connection appends "handing off" to the batch's ledger, with the
answers of its previous messages; a message lost during DATA is Unknown, one that did not leave
goes back to the dispatcher. Meanwhile the sender's own thread commits what is known every
second, with the bound the connections may hand off to before the next commit (`_Progress`),
stops everything on a cancel or a deadline, and steps aside for periodic work that waits. At the
end the outcome goes to the one writer (record.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import exists, select

from app.domain import backoff, eligibility
from app.domain.bounces import classify_reply
from app.domain.responses import Response
from app.domain.thresholds import render_failures_stop
from app.extensions import db
from app.models import Contact, Mailing, MailingVersion, Recipient, TypeOptOut, utcnow
from app.providers.rate import RateLimiter
from app.providers.relay import Relay
from app.providers.smtp import ConnectionLost, Outcome, SmtpSettings, SmtpTransport
from app.services import totals, windows
from app.services.ledger import (
    Ledger,
    LedgerRefused,
    handing_off_entry,
    refused_entry,
    sent_entry,
)
from app.services.rendering import TemplateProblem, builder_for, merge_data, new_message_id
from app.services.sending.claim import WINDOW_MIN, Claim, Pace
from app.services.sending.config import BatchConfig, Deferral
from app.services.sending.record import BatchOutcome, flush, flush_progress, in_flight
from app.services.sending.state import stop_key
from app.services.tokens import recipient_token

log = logging.getLogger("sendboard.sending")

RT = Recipient.__table__
CANCEL_CHECK_EVERY = 0.2  # seconds: cancel stops a batch within about this long
HEARTBEAT_EVERY = 1.0
PROGRESS_EVERY = 1.0  # at most this many seconds between a sender's partial flushes
# Seconds between two tries of a relay that cannot be used (the last one repeats) until every try
# has failed for the outage window (SENDBOARD_OUTAGE_MINUTES): then the mailing is interrupted.
RECONNECT_BACKOFF = (0.5, 1.0, 2.0, 4.0)
CONFIG_TRIES = 3  # tries of a relay whose certificate, STARTTLS or login fails, then interrupt
MIN_PER_CONNECTION = 8  # a batch of fewer rows than this per connection opens fewer connections


def refusing_key(rate_key: str) -> str:
    """Since when (Unix time) every attempt on this SMTP server was refused for now; deleted by
    the first message it takes or refuses for good."""
    return f"sb:refusing:{rate_key}"


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
    # Table columns, not ORM attributes: plain rows, without the ORM's loading per row.
    ct, ot = Contact.__table__.c, TypeOptOut.__table__.c
    opted_out = (
        exists().where(ot.contact_id == ct.id, ot.email_type_id == email_type_id)
        if email_type_id is not None else None
    )
    columns = [RT.c.id, RT.c.address, RT.c.contact_id, ct.name, ct.fields, ct.do_not_email,
               ct.valid, ct.last_transaction_at, ct.created_at, RT.c.response, RT.c.attempts,
               RT.c.first_deferred_at, RT.c.variant_id]
    if opted_out is not None:
        columns.append(opted_out.label("opted_out"))
    stmt = (
        select(*columns)
        .select_from(RT.outerjoin(Contact.__table__, ct.id == RT.c.contact_id))
        .where(in_flight(batch_id))
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
    limiter: RateLimiter  # shared by the connections: the pace holds across them
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
        self.refusing = _Refusing(batch.redis, batch.relay.rate_key)
        self.ledger = batch.ledger.appender()  # this thread's own Redis connection
        self.pending: list[str] = []  # answers, appended with the next hand-off
        self.failures = 0  # connection failures in a row
        self.error: BaseException | None = None

    def run(self) -> None:
        dispatch = self.batch.dispatch
        try:
            try:
                self._run()
            finally:
                try:
                    if self.pending:
                        self.ledger.append(*self.pending)
                        self.pending = []
                finally:
                    self.ledger.close()
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
            self.ledger.append(*self.pending)
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
        b.limiter.wait()

        def handing_off() -> None:
            # Recorded before any byte of the message can leave; the transport runs it while
            # the server reads the envelope, and drops the connection unsent if it fails.
            self.ledger.append(*self.pending, handing_off_entry(row.id))
            self.pending = []

        try:
            result = self.transport.send(built.envelope_from, row.address, built.data,
                                         before_body=handing_off)
        except ConnectionLost as exc:
            if exc.ambiguous:  # it may have arrived: never sent again
                outcome.add_final(row.id, Response.UNKNOWN, f"connection lost: {exc}")
            else:  # it did not leave: another connection, or this one again, takes it
                dispatch.give_back(row)
            self._failed(exc)
            return
        # The server's answer is noted in the outcome before anything else may fail (Redis going
        # away, say): from here on this message is recorded whatever stops the batch.
        self.failures = 0
        detail = f"{result.code} {result.text}"
        if result.outcome is Outcome.ACCEPTED:
            outcome.add_sent(row.id, message_id, sent_at, merge)
            self.pending.append(sent_entry(row.id, sent_at, message_id))
            self.refusing.clear()
        elif result.outcome is Outcome.REFUSED_PERMANENT:
            # Hard only when the reply says the address itself is bad (RFC 3463).
            response = classify_reply(result.code, result.text).response or Response.SOFT_BOUNCE
            outcome.add_final(row.id, response, detail, refused=True)
            self.pending.append(refused_entry(row.id, response, detail))
            self.refusing.clear()
        else:
            self._deferred(row, now, detail, result.code, result.text)

    def _deferred(self, row: _Row, now: datetime, detail: str, code: int, text: str) -> None:
        """Refused for now: Deferred until its next attempt, or a Soft bounce once the refusals
        have lasted the maximum age. Recorded in the ledger like a refusal, so a crash settles it
        as Deferred (retried after its backoff), never Unknown."""
        b = self.batch
        attempts, first, next_at = b.deferral.decide(
            attempts=row.attempts, first=row.first_deferred_at, now=now)
        if next_at is None:
            b.outcome.add_final(row.id, Response.SOFT_BOUNCE, detail, refused=True)
            self.pending.append(refused_entry(row.id, Response.SOFT_BOUNCE, detail))
        else:
            b.outcome.add_final(row.id, Response.DEFERRED, detail,
                                deferral=(attempts, first, next_at))
            self.pending.append(refused_entry(row.id, Response.DEFERRED, detail))
        if backoff.is_slow_down(code, text):
            rate_now = b.limiter.slow_down()
            log.warning("%s asked to slow down (%s): %.1f messages/s for now",
                        b.relay.label, detail, rate_now)
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
    config = claim.config or BatchConfig.current()
    relay = config.relay
    counters = totals.get(claim.mailing_id)
    failed_before = counters.get("delivery_errors", 0)
    dispatch = _Dispatch(rows, claim.reach)
    batch = _Batch(
        claim=claim, relay=relay, builder=builder, dispatch=dispatch, outcome=outcome,
        ledger=Ledger(redis, claim.batch_id), redis=redis,
        limiter=RateLimiter(redis, relay.rate_key, relay.rate), deferral=config.deferral,
        secret=config.secret, domain=content.get("domain") or "sendboard.local",
        send_until=send_until, email_type_id=email_type_id, inactivity=config.inactivity,
        failed_before=failed_before,
        tried_before=counters.get("handed_off", 0) + counters.get("refused", 0) + failed_before,
        window_closes=windows.closes_at(mailing, utcnow()),
        transactional=transactional,
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
        # Whatever ended this thread (a database error in a partial flush, say), no connection
        # goes on handing off after it: each finishes its message and stops.
        dispatch.halt("error", "the sender stopped")
        for connection in connections:
            if connection.is_alive():
                connection.join()
        heartbeat.stop()
        try:
            batch.limiter.flush()  # the pace counted, for a slow-down reply
        except RedisError:
            pass  # only a count: a lost one never stops a batch
        _checkin(relay.smtp, transports)


class _Progress:
    """When a sender flushes partially, and how far it may go before the next flush.

    The dispatcher hands the batch's rows out in id order. `reach` (SendBatch.handoff_reach,
    committed with the claim and with every partial flush) is the position no connection may hand
    off at or past before a new one is committed; it lies about one second of sending ahead. If the ledger is lost with
    the worker, the reconciler marks Unknown only the rows still Planned below that bound.
    """

    def __init__(self, claim: Claim, outcome: BatchOutcome, version_id: int) -> None:
        self.claim, self.outcome, self.version_id = claim, outcome, version_id
        self.reach = claim.reach
        self.mark = (time.monotonic(), 0)  # time and position of the last flush
        self.next_at = self.mark[0] + PROGRESS_EVERY

    def due(self, position: int, mono: float) -> bool:
        # Half-way to the bound already: the commit then lands before the connections reach
        # the bound, so they never wait for it.
        return position * 2 >= self.reach + self.mark[1] or mono >= self.next_at

    def flush(self, position: int, mono: float) -> bool:
        """Record everything before `position` and a new bound; False once the batch is settled."""
        last_mono, last_position = self.mark
        if position > last_position and mono > last_mono:
            rate = (position - last_position) / (mono - last_mono)
            Pace.window = max(WINDOW_MIN, int(rate * PROGRESS_EVERY) + 1)
        reach = position + Pace.window
        if not flush_progress(self.claim, self.outcome, self.version_id, reach):
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

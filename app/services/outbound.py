"""Outbound webhooks: endpoints, the pump that turns response events into deliveries, and one
delivery attempt (docs/ARCHITECTURE.md, "Outbound webhooks"). The rules are in
app.domain.webhooks_out; the jobs that run this are in jobs/outbound.py.

The database is the truth. A delivery row is created, with the endpoint's cursor moved past its
events, in one transaction; it stays ``pending`` with a ``next_attempt_at`` until an attempt
gets a 2xx. Taking an attempt moves ``next_attempt_at`` a lease ahead, so a worker that dies
mid-attempt leaves a row the periodic tick finds due again once the lease is over. Deliveries of
one endpoint go out one at a time, oldest first: a receiver sees events in id order.

Services never commit: the view or job that called them does.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from app.domain import webhooks_out as rules
from app.domain.events import KINDS
from app.extensions import db
from app.models import (
    Recipient,
    ResponseEvent,
    User,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.services import audit

log = logging.getLogger("sendboard.webhooks.outbound")

ALLOW_PRIVATE_SETTING = "SENDBOARD_WEBHOOKS_ALLOW_PRIVATE"
EVENTS_PER_DELIVERY = 500
LEASE = timedelta(seconds=60)  # an attempt's claim; a dead worker's claim expires after this
TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 * 1024  # read (and ignored) of an answer, so the connection closes cleanly
EVENT_KIND_CHOICES = tuple(sorted(KINDS))
ET = ResponseEvent.__table__
RT = Recipient.__table__
NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # a time no gap rule reads

Resolver = Callable[[str, int], list[str]]


class EndpointError(ValueError):
    """An endpoint that cannot be saved as given; the message is for the person who gave it."""


# ---------------------------------------------------------------- settings and addresses


def allow_private() -> bool:
    """SENDBOARD_WEBHOOKS_ALLOW_PRIVATE (app config or environment): private addresses allowed."""
    value: Any = None
    try:
        from flask import current_app

        value = current_app.config.get(ALLOW_PRIVATE_SETTING)
    except RuntimeError:  # no app context
        value = None
    if value in (None, ""):
        value = os.environ.get(ALLOW_PRIVATE_SETTING, "")
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (an empty list when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_destination(url: str, resolver: Resolver = resolve) -> tuple[str | None, list[str]]:
    """(why the URL may not receive events or None, the addresses it resolved to)."""
    reason = rules.url_refusal(url)
    if reason:
        return reason, []
    host, port, _ = rules.host_and_port(url)
    addresses = resolver(host, port)
    refusal = rules.addresses_refusal(addresses, allow_private=allow_private())
    if refusal:
        return f"Events cannot be sent to {host}: {refusal}.", addresses
    return None, addresses


# ---------------------------------------------------------------- endpoints


def _kinds(kinds: list[str] | None) -> list[str]:
    chosen = sorted(set(kinds or ()))
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise EndpointError(f"Unknown event kind: {unknown[0][:40]}")
    return chosen


def _secret(secret: str | None) -> str:
    if not secret:
        return rules.new_secret()
    secret = secret.strip()
    if not 16 <= len(secret) <= 128 or not secret.isascii() or not secret.isprintable():
        raise EndpointError("A secret you give must be 16 to 128 printable ASCII characters.")
    return secret


def last_event_id() -> int:
    return int(db.session.scalar(select(func.max(ResponseEvent.id))) or 0)


def create_endpoint(*, name: str, url: str, event_kinds: list[str] | None = None,
                    secret: str | None = None, user: User | None = None,
                    resolver: Resolver = resolve) -> WebhookEndpoint:
    """A new endpoint, sent the events recorded from now on. Raises EndpointError."""
    reason, _ = check_destination(url.strip(), resolver)
    if reason:
        raise EndpointError(reason)
    endpoint = WebhookEndpoint(name=name.replace("\x00", "").strip()[:100], url=url.strip(),
                               secret=_secret(secret),
                               event_kinds=_kinds(event_kinds), active=True,
                               cursor_event_id=last_event_id(),
                               created_by_id=user.id if user is not None else None)
    db.session.add(endpoint)
    db.session.flush()
    audit.record("webhook.create", endpoint.id, f"{endpoint.url[:200]}", kind="webhook")
    return endpoint


def update_endpoint(endpoint: WebhookEndpoint, *, name: str, url: str,
                    event_kinds: list[str] | None, active: bool,
                    resolver: Resolver = resolve) -> None:
    """Change an endpoint; a new URL is checked as at registration. Raises EndpointError."""
    url = url.strip()
    if url != endpoint.url:
        reason, _ = check_destination(url, resolver)
        if reason:
            raise EndpointError(reason)
    endpoint.name, endpoint.url = name.replace("\x00", "").strip()[:100], url
    endpoint.event_kinds = _kinds(event_kinds)
    endpoint.active = active
    audit.record("webhook.edit", endpoint.id, f"{url[:200]} active={active}", kind="webhook")


def rotate_secret(endpoint: WebhookEndpoint, secret: str | None = None) -> str:
    endpoint.secret = _secret(secret)
    audit.record("webhook.secret", endpoint.id, "", kind="webhook")
    return endpoint.secret


def enable_endpoint(endpoint: WebhookEndpoint, now: datetime | None = None) -> None:
    """Turn a disabled endpoint back on: its pending deliveries are due at once."""
    now = now or datetime.now(UTC)
    endpoint.disabled_at, endpoint.disabled_reason = None, ""
    endpoint.failing_since, endpoint.active = None, True
    db.session.execute(update(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending"
    ).values(next_attempt_at=now))
    audit.record("webhook.enable", endpoint.id, "", kind="webhook")


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    audit.record("webhook.delete", endpoint.id, endpoint.url[:200], kind="webhook")
    db.session.execute(WebhookAttempt.__table__.delete().where(
        WebhookAttempt.delivery_id.in_(select(WebhookDelivery.id).where(
            WebhookDelivery.endpoint_id == endpoint.id))))
    db.session.execute(WebhookDelivery.__table__.delete().where(
        WebhookDelivery.endpoint_id == endpoint.id))
    db.session.delete(endpoint)


def send_again(delivery: WebhookDelivery, now: datetime | None = None) -> None:
    """Queue a delivery once more (delivered or given up): pending and due now."""
    delivery.status = "pending"
    delivery.next_attempt_at = now or datetime.now(UTC)
    delivery.delivered_at = None
    audit.record("webhook.send_again", delivery.endpoint_id, f"delivery {delivery.id}",
                 kind="webhook")


def disabled_endpoints() -> list[WebhookEndpoint]:
    return list(db.session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.disabled_at.is_not(None)).order_by(WebhookEndpoint.id)))


# ---------------------------------------------------------------- the pump


ETP = WebhookEndpoint.__table__


def pump_endpoint(endpoint_id: int, *, limit: int = EVENTS_PER_DELIVERY,
                  now: datetime | None = None) -> WebhookDelivery | None | bool:
    """Gather the next run of events after the endpoint's cursor into one delivery, and move
    the cursor past them (also past events of kinds the endpoint does not want).

    Returns the new delivery; True when the cursor moved without one (no wanted event in the
    run); None when there is nothing to take now, or another pump took this run first. The
    caller commits.

    The run is read before anything is written, and the cursor then moves only if it is still
    where it was read (a conditional UPDATE): two pumps never make two deliveries of one run,
    and the database's write lock (SQLite's is the whole file) is held for two short statements,
    not for reading and encoding the run.
    """
    now = now or datetime.now(UTC)
    endpoint = db.session.execute(
        select(ETP.c.cursor_event_id, ETP.c.event_kinds)
        .where(ETP.c.id == endpoint_id, ETP.c.active.is_(True), ETP.c.disabled_at.is_(None))
    ).first()
    if endpoint is None:
        return None
    cursor = int(endpoint.cursor_event_id)
    # One Core query (no ORM rows: this runs for every event) for the run and its addresses.
    rows = db.session.connection().execute(
        select(ET.c.id, ET.c.kind, ET.c.mailing_id, ET.c.recipient_id, ET.c.occurred_at,
               ET.c.detail, RT.c.address)
        .select_from(ET.outerjoin(RT, RT.c.id == ET.c.recipient_id))
        .where(ET.c.id > cursor).order_by(ET.c.id).limit(limit)
    ).all()
    last = rules.deliverable_up_to(cursor, _with_gap_times(cursor, [r.id for r in rows]), now)
    if last == cursor:
        return None
    wanted = set(endpoint.event_kinds or ())
    events = [rules.event_json(event_id=r.id, kind=r.kind, mailing_id=r.mailing_id,
                               recipient_id=r.recipient_id, email=r.address or "",
                               occurred_at=r.occurred_at, detail=r.detail)
              for r in rows if r.id <= last and (not wanted or r.kind in wanted)]
    body = rules.body(events) if events else ""
    moved = db.session.execute(
        update(ETP).where(ETP.c.id == endpoint_id, ETP.c.cursor_event_id == cursor,
                          ETP.c.active.is_(True), ETP.c.disabled_at.is_(None))
        .values(cursor_event_id=last))
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None  # another pump took this run, or the endpoint changed meanwhile
    if not events:
        return True
    delivery = WebhookDelivery(endpoint_id=endpoint_id, first_event_id=events[0]["id"],
                               last_event_id=events[-1]["id"], events=len(events),
                               body=body, status="pending", attempts=0,
                               next_attempt_at=now, created_at=now)
    db.session.add(delivery)
    db.session.flush()
    return delivery


def _with_gap_times(cursor: int, ids: list[int]) -> list[tuple[int, datetime]]:
    """(id, received_at) for `deliverable_up_to`; the time is read only where an id is missing
    before it (the rule looks at nothing else), so a run without gaps costs no extra query."""
    after_gap = [i for prev, i in zip([cursor, *ids], ids, strict=False) if i != prev + 1]
    times: dict[int, datetime] = {}
    if after_gap:
        times = {i: _utc(at) for i, at in db.session.execute(
            select(ET.c.id, ET.c.received_at).where(ET.c.id.in_(after_gap)))}
    return [(i, times.get(i, NEVER)) for i in ids]


def pumpable_endpoints() -> list[int]:
    """Endpoints that take events now (active, not disabled)."""
    return list(db.session.scalars(select(WebhookEndpoint.id).where(
        WebhookEndpoint.active.is_(True), WebhookEndpoint.disabled_at.is_(None)
    ).order_by(WebhookEndpoint.id)))


def endpoints_due(now: datetime | None = None) -> list[int]:
    """Endpoints whose oldest pending delivery is due (deliveries go out oldest first)."""
    now = now or datetime.now(UTC)
    heads = (select(WebhookDelivery.endpoint_id, func.min(WebhookDelivery.id).label("head"))
             .where(WebhookDelivery.status == "pending")
             .group_by(WebhookDelivery.endpoint_id).subquery())
    return list(db.session.scalars(
        select(WebhookDelivery.endpoint_id)
        .join(heads, heads.c.head == WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.next_attempt_at <= now, WebhookEndpoint.active.is_(True),
               WebhookEndpoint.disabled_at.is_(None))
        .order_by(WebhookDelivery.endpoint_id)))


# ---------------------------------------------------------------- one attempt


def claim_next(endpoint_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Claim the endpoint's oldest pending delivery if it is due: its next_attempt_at moves a
    lease ahead (commit before attempting). None when the oldest is not due, or another worker
    claimed it first: a newer delivery never overtakes an older one."""
    now = now or datetime.now(UTC)
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or not endpoint.active or endpoint.disabled_at is not None:
        return None
    head = db.session.execute(
        select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
        # "+ 0": found through the pending rows (the status index), not by walking every
        # delivered row of the endpoint.
        .where(WebhookDelivery.endpoint_id + 0 == endpoint_id,
               WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id).limit(1)).first()
    if head is None or head.next_attempt_at is None or _utc(head.next_attempt_at) > now:
        return None
    taken = db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == head.id, WebhookDelivery.status == "pending",
               WebhookDelivery.next_attempt_at <= now)
        .values(next_attempt_at=now + LEASE)
        .execution_options(synchronize_session=False))
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return db.session.execute(select(WebhookDelivery).where(WebhookDelivery.id == head.id)
                              .execution_options(populate_existing=True)).scalar_one()


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    latency_ms: int
    error: str = ""


Poster = Callable[[str, bytes, dict[str, str]], Answer]


class _Deadline:
    """One exchange's time limit: connect, send and the whole answer share it, so a receiver
    that trickles its answer a byte at a time cannot hold a worker past it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(self.message())
        return left

    def message(self) -> str:
        return f"no complete answer within {self.seconds:g} s"


class _DeadlineReader(io.RawIOBase):
    """The answer's bytes off the socket, each read given only the time the exchange has left."""

    def __init__(self, owner: _DeadlineSocket) -> None:
        super().__init__()
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        sock = self._owner.sock
        sock.settimeout(self._owner.deadline.left())
        return sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._owner.release()
        super().close()


class _DeadlineSocket:
    """The connected (possibly TLS) socket as http.client uses it: sends and reads bounded by
    the exchange's deadline rather than by a fresh timeout per call. Like a socket's own
    makefile, the socket stays open until its readers are closed too (http.client closes the
    connection before reading an answer that ends with the connection)."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self.sock = sock
        self.deadline = deadline
        self._readers = 0
        self._closed = False

    def sendall(self, data: Any) -> None:
        self.sock.settimeout(self.deadline.left())  # sendall's timeout covers the whole send
        self.sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def release(self) -> None:
        self._readers -= 1
        if self._closed and self._readers <= 0:
            self.sock.close()

    def close(self) -> None:
        self._closed = True
        if self._readers <= 0:
            self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand, with the certificate checked for the host name."""

    def __init__(self, host: str, address: str, port: int, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.seconds,
                         context=ssl.create_default_context())
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self._deadline.left())
        sock.settimeout(self._deadline.left())  # the handshake, as a whole, within what is left
        tls = self._context.wrap_socket(  # type: ignore[attr-defined]
            sock, server_hostname=self.host)
        self.sock = _DeadlineSocket(tls, self._deadline)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.seconds)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self._deadline.left())
        self.sock = _DeadlineSocket(sock, self._deadline)


def post(url: str, body: bytes, headers: dict[str, str], *,
         resolver: Resolver = resolve, timeout: float | None = None) -> Answer:
    """POST once, to an address checked now (names can change what they resolve to), never
    following a redirect. `timeout` (TIMEOUT_SECONDS unless given) bounds the whole exchange:
    connecting, sending and reading the whole answer. Never raises: a refusal, a network error
    or an answer not complete in time is an Answer too."""
    started = time.monotonic()

    def answer(code: int | None, error: str = "") -> Answer:
        return Answer(code, int((time.monotonic() - started) * 1000), error[:500])

    reason, addresses = check_destination(url, resolver)
    if reason:
        return answer(None, f"refused: {reason}")
    host, port, tls = rules.host_and_port(url)
    path = rules.request_target(url)
    cls = _PinnedHTTPS if tls else _PinnedHTTP
    deadline = _Deadline(TIMEOUT_SECONDS if timeout is None else timeout)
    conn = cls(host, addresses[0], port, deadline)
    response: http.client.HTTPResponse | None = None
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_ANSWER_BYTES)
        return answer(response.status)
    except TimeoutError:
        return answer(None, deadline.message())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return answer(None, f"{type(exc).__name__}: {exc}")
    finally:
        if response is not None:
            response.close()
        conn.close()


def attempt(delivery: WebhookDelivery, *, poster: Poster | None = None,
            now: Callable[[], datetime] | None = None) -> Answer:
    """POST a claimed delivery once and record the attempt and its outcome (caller commits)."""
    clock = now or (lambda: datetime.now(UTC))
    endpoint = db.session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None:
        raise LookupError(f"endpoint {delivery.endpoint_id} is gone")
    raw = delivery.body.encode("utf-8")
    stamp = int(clock().timestamp())
    sent_headers = rules.headers(endpoint.secret, stamp, raw, delivery.id)
    answer = (poster or (lambda u, b, h: post(u, b, h)))(endpoint.url, raw, sent_headers)
    record_answer(delivery, endpoint, answer, clock())
    return answer


def record_answer(delivery: WebhookDelivery, endpoint: WebhookEndpoint, answer: Answer,
                  at: datetime) -> None:
    first_at = None if rules.is_success(answer.status_code) else db.session.scalar(
        select(func.min(WebhookAttempt.at)).where(WebhookAttempt.delivery_id == delivery.id))
    db.session.add(WebhookAttempt(delivery_id=delivery.id, at=at, status_code=answer.status_code,
                                  latency_ms=answer.latency_ms, error=answer.error[:500]))
    delivery.attempts += 1
    delivery.last_status_code = answer.status_code
    delivery.last_latency_ms = answer.latency_ms
    delivery.last_error = answer.error[:500]
    if rules.is_success(answer.status_code):
        delivery.status, delivery.delivered_at = "delivered", at
        delivery.next_attempt_at = None
        endpoint.failing_since = None
        return
    if not answer.error:
        delivery.last_error = f"HTTP {answer.status_code}"
    fate = rules.after_failure(failed_attempts=_failures(delivery),
                               first_attempt_at=_utc(first_at) if first_at else at, now=at,
                               failing_since=_utc(endpoint.failing_since)
                               if endpoint.failing_since else None)
    endpoint.failing_since = fate.failing_since
    if fate.give_up:
        delivery.status, delivery.next_attempt_at = "failed", None
    else:
        delivery.next_attempt_at = fate.next_attempt_at
    if fate.disable_endpoint and endpoint.disabled_at is None:
        endpoint.disabled_at = at
        endpoint.disabled_reason = (f"Every attempt failed for 24 hours (last: "
                                    f"{delivery.last_error[:120]})")
        log.error("webhook endpoint %s (%s) disabled: %s", endpoint.id, endpoint.url,
                  endpoint.disabled_reason)
        audit.record("webhook.disable", endpoint.id, endpoint.disabled_reason, kind="webhook")


def _failures(delivery: WebhookDelivery) -> int:
    """Failed attempts in a row at the end of the delivery's attempts (this one included)."""
    codes = db.session.execute(
        select(WebhookAttempt.status_code).where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(WebhookAttempt.id.desc()).limit(len(rules.RETRY_SCHEDULE) + 2)).scalars()
    count = 0
    for code in codes:
        if rules.is_success(code):
            break
        count += 1
    return max(count, 1)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- the log


@dataclass(frozen=True)
class LogRow:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


def delivery_log(endpoint_id: int, *, before_id: int | None = None,
                 size: int = 50) -> tuple[list[LogRow], int | None]:
    """Newest deliveries first, each with its attempts (oldest first); and the next page's id."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if before_id is not None:
        stmt = stmt.where(WebhookDelivery.id < before_id)
    rows = list(db.session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(size + 1)))
    more = rows[size].id + 1 if len(rows) > size else None
    rows = rows[:size]
    attempts: dict[int, list[WebhookAttempt]] = {r.id: [] for r in rows}
    if rows:
        for a in db.session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.id)):
            attempts[a.delivery_id].append(a)
    return [LogRow(r, attempts[r.id]) for r in rows], (rows[-1].id if more else None)


def pending_counts() -> dict[int, int]:
    return {eid: n for eid, n in db.session.execute(
        select(WebhookDelivery.endpoint_id, func.count()).where(
            WebhookDelivery.status == "pending").group_by(WebhookDelivery.endpoint_id))}

"""Applying response events: the one path for every open, click, bounce and unsubscribe.

Tracking, webhooks, bounce mail and the time rules all call `apply_events` (or `apply_event` for
one), then commit: a batch is one transaction, so timeline rows, recipient responses, mailing
counters and contact effects commit together or not at all, and totals never drift from responses.
Nothing here commits, but the 48-hour rule, which commits mailing by mailing so the write lock is
never held for long (docs/ARCHITECTURE.md, Layering).

The rules themselves are pure and live in `app.domain`: which response an event asks for and how
it folds into the recipient and the counters (`app.domain.events`), whether it may replace the
current response (`app.domain.responses.decide`), what it does to the contact
(`app.domain.events.contact_effect`), and the names of the counters (`app.domain.figures`).
docs/ARCHITECTURE.md ("Responses", "Figures") describes them in words. This module reads the
recipients a batch names, folds the events in with those rules, and writes the result:

- every event is appended to the recipient's timeline (``response_events``), applied or not;
- a repeated (source, provider_event_id) changes nothing; the unique constraint settles a race;
- the recipient rows, the mailing counters and the contacts are written set-based at the end.

Why hourly counters rather than a GROUP BY on ``response_events``: at 2,000,000 events a GROUP BY
over (mailing_id, kind, occurred_at) still reads every open row of the mailing (seconds on SQLite),
while the counters are one upsert per hour bucket per batch and the chart reads a few hundred rows
by primary-key prefix (`activity`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    and_,
    any_,
    bindparam,
    delete,
    distinct,
    false,
    func,
    insert,
    literal,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from app.domain import events as rules
from app.domain.bounces import Reason
from app.domain.events import ContactEffect, Tally
from app.domain.responses import Response
from app.extensions import db
from app.models import (
    Contact,
    Mailing,
    MailingCounter,
    Provider,
    Recipient,
    ResponseEvent,
    TrackedLink,
    TypeOptOut,
    UTCDateTime,
)
from app.services import suppressions, totals

log = logging.getLogger(__name__)

# The event vocabulary lives with its rules; named here too for the callers of this service.
OPEN = rules.OPEN
CLICK = rules.CLICK
DEFERRED = rules.DEFERRED
RESUBSCRIBED = rules.RESUBSCRIBED
AUTO_REPLY = rules.AUTO_REPLY
DELIVERED_REPORT = rules.DELIVERED_REPORT
RECLASSIFIED = rules.RECLASSIFIED
TIMELINE_ONLY = rules.TIMELINE_ONLY
EVENT_RESPONSES = rules.EVENT_RESPONSES
KINDS = rules.KINDS
DETAIL_TEXT_LIMIT = 2000
RT = Recipient.__table__
ET = ResponseEvent.__table__


@dataclass(frozen=True)
class Event:
    """One incoming event. Name the recipient by `recipient_id` or by our `message_id`."""

    kind: str
    source: str
    occurred_at: datetime
    recipient_id: int | None = None
    message_id: str | None = None
    provider_event_id: str | None = None
    detail: Mapping[str, Any] | None = None
    machine: bool = False


@dataclass(slots=True)
class ApplyResult:
    """What one event did: `applied` when it changed the response; `duplicate` when ignored."""

    recipient_id: int | None
    kind: str
    applied: bool = False
    duplicate: bool = False
    unmatched: bool = False
    response: Response | None = None
    previous: Response | None = None


@dataclass
class BatchResult:
    """The outcome of `apply_events`, in the order the events were given."""

    results: list[ApplyResult] = field(default_factory=list)

    @property
    def received(self) -> int:
        return len(self.results)

    @property
    def applied(self) -> int:
        return sum(r.applied for r in self.results)

    @property
    def duplicates(self) -> int:
        return sum(r.duplicate for r in self.results)

    @property
    def unmatched(self) -> int:
        return sum(r.unmatched for r in self.results)

    def summary(self) -> dict[str, int]:
        return {"received": self.received, "applied": self.applied,
                "duplicates": self.duplicates, "unmatched": self.unmatched}


class EventError(ValueError):
    """An event that cannot be applied as given (unknown kind, naive time)."""


def normalize_message_id(value: str | None) -> str | None:
    """Our Message-ID as stored: no angle brackets, no surrounding blanks; None when empty."""
    if not value:
        return None
    cleaned = value.strip().strip("<>").strip()
    return cleaned or None


def check_event(event: Event) -> None:
    """Raise EventError if the event could never be applied; webhooks validate a whole payload
    with this before applying any of it."""
    if event.kind not in KINDS:
        raise EventError(f"unknown event kind {event.kind!r}")
    if event.occurred_at.tzinfo is None:
        raise EventError("occurred_at must be timezone-aware")
    if not event.source or len(event.source) > 30:
        raise EventError("source must be 1 to 30 characters")
    if event.provider_event_id is not None and len(event.provider_event_id) > 255:
        raise EventError("provider event id longer than 255 characters")


def apply_event(
    recipient: int | Recipient,
    *,
    kind: str,
    source: str,
    occurred_at: datetime,
    provider_event_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    machine: bool = False,
) -> ApplyResult:
    """Apply one event to one recipient (by id or row); see `apply_events`."""
    rid = recipient if isinstance(recipient, int) else recipient.id
    event = Event(kind=kind, source=source, occurred_at=occurred_at, recipient_id=rid,
                  provider_event_id=provider_event_id, detail=detail, machine=machine)
    return apply_events([event]).results[0]


def apply_events(events: Sequence[Event]) -> BatchResult:
    """Apply a batch of events, set-based: a few statements per batch, not per event; the caller
    commits them as one transaction. Raises EventError (before writing anything) if any event is
    invalid.

    A concurrent batch carrying the same provider event id makes our insert fail on the unique
    constraint; the batch is then rolled back and applied once more, when the check finds it.
    That rollback takes whatever else the session had not committed: a caller applies one batch
    per unit of work and commits right after.
    """
    for event in events:
        check_event(event)
    if not events:
        return BatchResult()
    try:
        result = _apply(events)
    except IntegrityError:
        db.session.rollback()
        log.info("provider event ids raced with another request; applying the batch again")
        result = _apply(events)
    # The writes were set-based: rows already loaded in the session are read again on next use.
    db.session.expire_all()
    return result


# ---------------------------------------------------------------- the batch, step by step


@dataclass(slots=True)
class _State:
    """A recipient as the batch sees it while its events are folded in, oldest first."""

    id: int
    mailing_id: int
    contact_id: int | None
    tally: Tally  # what the rules read and change
    read: tuple[int, int, int, int]  # opens, clicks, machine opens and clicks as read
    response_at: datetime | None = None
    detail: str | None = None
    reason: str | None = None
    changed: bool = False

    @property
    def response(self) -> Response:
        return self.tally.response

    @property
    def increments(self) -> tuple[int, int, int, int]:
        """Opens, clicks, machine opens and machine clicks this batch added."""
        t, (opens, clicks, m_opens, m_clicks) = self.tally, self.read
        return (t.opens - opens, t.clicks - clicks, t.machine_opens - m_opens,
                t.machine_clicks - m_clicks)


def _lock_for_write() -> None:
    """Take the write lock before reading, so what we read is still true when we write.

    SQLite: a write statement starts the transaction and takes the database's write lock (waiting
    out busy_timeout), so no other writer can slip in between our reads and our writes.
    PostgreSQL: the recipient rows are read FOR UPDATE instead (see _load_recipients).
    """
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(text("UPDATE mailing_counters SET value = value WHERE 0 = 1"))


def _apply(events: Sequence[Event]) -> BatchResult:
    _lock_for_write()
    states = _load_recipients(events)
    seen = _existing_provider_ids(events)

    results: list[ApplyResult | None] = [None] * len(events)
    # Per recipient, oldest event first: "events may arrive in any order" within a batch too.
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    event_rows: list[_EventRow] = []
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    effects = _ContactEffects()
    link_clicks: Counter[int] = Counter()
    now = datetime.now(UTC)

    for i in order:
        event = events[i]
        state = _state_for(event, states)
        if state is None:
            results[i] = ApplyResult(recipient_id=event.recipient_id, kind=event.kind,
                                     unmatched=True)
            continue
        if event.provider_event_id is not None:
            key = (event.source, event.provider_event_id)
            if key in seen:
                results[i] = ApplyResult(recipient_id=state.id, kind=event.kind, duplicate=True,
                                         response=state.response)
                continue
            seen.add(key)
        previous = state.response
        applied = _fold(state, event, deltas[state.mailing_id])
        effects.note(state, event, applied)
        if event.kind == CLICK and not event.machine and event.detail:
            link_id = event.detail.get("link_id")
            if isinstance(link_id, int):
                link_clicks[link_id] += 1
        event_rows.append((state.id, state.mailing_id, event.kind, event.source,
                           event.provider_event_id, event.occurred_at, applied, event.machine,
                           event.detail or None))
        results[i] = ApplyResult(recipient_id=state.id, kind=event.kind, applied=applied,
                                 response=state.response, previous=previous)

    if event_rows:
        _insert_events(event_rows, now)
    _write_recipients(states, now)
    for mailing_id, counter in deltas.items():
        totals.bump(mailing_id, counter)
    effects.write()
    for link_id, n in link_clicks.items():
        db.session.execute(
            update(TrackedLink).where(TrackedLink.id == link_id)
            .values(clicks=TrackedLink.clicks + n)
        )
    return BatchResult([r for r in results if r is not None])


def _load_recipients(events: Sequence[Event]) -> dict[Any, _State]:
    """The batch's recipients, keyed both by id and by ("mid", message_id)."""
    ids = {e.recipient_id for e in events if e.recipient_id is not None}
    mids = {m for e in events if e.recipient_id is None
            and (m := normalize_message_id(e.message_id)) is not None}
    cols = (RT.c.id, RT.c.mailing_id, RT.c.contact_id, RT.c.response, RT.c.crash_unknown,
            RT.c.opens, RT.c.clicks, RT.c.machine_opens, RT.c.machine_clicks, RT.c.message_id)
    sqlite = _is_sqlite()
    out: dict[Any, _State] = {}
    for column, values in ((RT.c.id, ids), (RT.c.message_id, mids)):
        if not values:
            continue
        if sqlite:
            # One JSON parameter instead of one bound parameter per value: no limit, and the
            # statement is the same text whatever the batch size.
            rows: Iterable[Any] = db.session.connection().exec_driver_sql(
                f"SELECT {', '.join(c.name for c in cols)} FROM recipients"
                f" WHERE {column.name} IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(values)),),
            )
        else:
            # PostgreSQL: one array parameter; rows locked in id order, so no deadlocks.
            rows = db.session.execute(
                select(*cols).where(column == any_(_pg_array(values, column)))
                .order_by(RT.c.id).with_for_update()
            )
        for (rid, mailing_id, contact_id, response, crash, opens, clicks, m_opens, m_clicks,
             message_id) in rows:
            state = out.get(rid)
            if state is None:
                tally = Tally(Response(response), bool(crash), opens, clicks, m_opens, m_clicks)
                state = out[rid] = _State(rid, mailing_id, contact_id, tally,
                                          (opens, clicks, m_opens, m_clicks))
            if message_id:
                out[("mid", message_id)] = state
    return out


def _pg_array(values: Iterable[Any], column: Any) -> Any:
    """A set of values as one PostgreSQL array parameter of the column's type."""
    return bindparam(None, sorted(values), type_=ARRAY(column.type), expanding=False)


def _state_for(event: Event, states: dict[Any, _State]) -> _State | None:
    if event.recipient_id is not None:
        return states.get(event.recipient_id)
    mid = normalize_message_id(event.message_id)
    return states.get(("mid", mid)) if mid else None


def _existing_provider_ids(events: Sequence[Event]) -> set[tuple[str, str]]:
    by_source: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.provider_event_id is not None:
            by_source[e.source].add(e.provider_event_id)
    seen: set[tuple[str, str]] = set()
    for source, ids in by_source.items():
        if _is_sqlite():
            rows: Iterable[Any] = db.session.connection().exec_driver_sql(
                "SELECT provider_event_id FROM response_events WHERE source = ?"
                " AND provider_event_id IN (SELECT value FROM json_each(?))",
                (source, json.dumps(sorted(ids))),
            )
        else:
            rows = db.session.execute(select(ET.c.provider_event_id).where(
                ET.c.source == source,
                ET.c.provider_event_id == any_(_pg_array(ids, ET.c.provider_event_id)),
            ))
        seen.update((source, pid) for (pid,) in rows)
    return seen


def _fold(state: _State, event: Event, deltas: Counter[str]) -> bool:
    """Fold one event into the recipient state and the mailing deltas; True if it applied."""
    if event.kind == OPEN or event.kind == CLICK:
        prefix = "opens" if event.kind == OPEN else "clicks"
        rules.count_activity(state.tally, event.kind, event.machine, deltas,
                             _hour_counter(prefix, event.occurred_at))
    if not rules.move_response(state.tally, event.kind, event.machine, deltas):
        return False
    state.response_at = event.occurred_at
    state.detail = _detail_text(event)
    reason = (event.detail or {}).get("reason")
    state.reason = str(reason)[:30] if reason else ""
    state.changed = True
    return True


def _detail_text(event: Event) -> str:
    """The recipient's one-line detail: the server's words for a bounce, else empty."""
    if not event.detail:
        return ""
    for key in ("diagnostic", "reason", "status"):
        value = event.detail.get(key)
        if value:
            return str(value)[:DETAIL_TEXT_LIMIT]
    return ""


def _write_recipients(states: dict[Any, _State], now: datetime) -> None:
    unique = {id(s): s for s in states.values()}.values()
    counts_only = []
    changed = []
    for s in unique:
        if s.changed:
            changed.append(s)
        elif any(s.increments):
            counts_only.append(s)
    increments = {
        "opens": RT.c.opens + bindparam("d_opens"),
        "clicks": RT.c.clicks + bindparam("d_clicks"),
        "machine_opens": RT.c.machine_opens + bindparam("d_mopens"),
        "machine_clicks": RT.c.machine_clicks + bindparam("d_mclicks"),
        "updated_at": now,
    }

    def params(s: _State) -> dict[str, Any]:
        d_opens, d_clicks, d_mopens, d_mclicks = s.increments
        return {"rid": s.id, "d_opens": d_opens, "d_clicks": d_clicks,
                "d_mopens": d_mopens, "d_mclicks": d_mclicks}

    if _is_sqlite():
        _write_recipients_sqlite(changed, counts_only, now)
        return
    if changed:
        db.session.execute(
            update(RT).where(RT.c.id == bindparam("rid")).values(
                response=bindparam("resp"), response_at=bindparam("resp_at"),
                crash_unknown=False, detail=bindparam("det"), reason=bindparam("why"),
                **increments,
            ),
            [{**params(s), "resp": s.response.value, "resp_at": s.response_at,
              "det": s.detail or "", "why": s.reason or ""} for s in changed],
        )
    if counts_only:
        db.session.execute(
            update(RT).where(RT.c.id == bindparam("rid")).values(**increments),
            [params(s) for s in counts_only],
        )


# SQLite fast path. The two statements that run once per event go straight to the driver's
# executemany: SQLAlchemy's per-row parameter processing (two datetime conversions per row) cost
# more than SQLite's own work. Values are written exactly as SQLAlchemy would store them
# (naive UTC "YYYY-MM-DD HH:MM:SS.ffffff", JSON text), so reads through the models are unchanged.
# PostgreSQL keeps the Core statements above (its executemany is already batched).


def _is_sqlite() -> bool:
    return db.session.get_bind().dialect.name == "sqlite"


@lru_cache(maxsize=4096)
def _sqlite_time(moment: datetime | None) -> str | None:
    """"YYYY-MM-DD HH:MM:SS.ffffff" in UTC, as SQLAlchemy stores it; remembered, as providers
    report whole seconds and a batch's events share a few."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


# A timeline row as the batch gathers it: (recipient_id, mailing_id, kind, source,
# provider_event_id, occurred_at, applied, machine, detail).
_EventRow = tuple[int, int, str, str, str | None, datetime, bool, bool, Mapping[str, Any] | None]
SQLITE_INSERT_EVENTS = (
    "INSERT INTO response_events (recipient_id, mailing_id, kind, source, provider_event_id,"
    " occurred_at, received_at, applied, machine, detail) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _insert_events(rows: list[_EventRow], received_at: datetime) -> None:
    if not _is_sqlite():
        db.session.execute(insert(ET), [
            {"recipient_id": r[0], "mailing_id": r[1], "kind": r[2], "source": r[3],
             "provider_event_id": r[4], "occurred_at": r[5], "received_at": received_at,
             "applied": r[6], "machine": r[7], "detail": dict(r[8]) if r[8] else None}
            for r in rows
        ])
        return
    received = _sqlite_time(received_at)
    db.session.connection().exec_driver_sql(SQLITE_INSERT_EVENTS, [
        (rid, mid, kind, source, pid, _sqlite_time(at), received, applied, machine,
         json.dumps(detail) if detail else None)
        for rid, mid, kind, source, pid, at, applied, machine, detail in rows
    ])


def _write_recipients_sqlite(changed: list[_State], counts_only: list[_State],
                             now: datetime) -> None:
    conn = db.session.connection()
    stamp = _sqlite_time(now)
    counts = ("opens = opens + ?, clicks = clicks + ?, machine_opens = machine_opens + ?,"
              " machine_clicks = machine_clicks + ?, updated_at = ?")
    if changed:
        conn.exec_driver_sql(
            "UPDATE recipients SET response = ?, response_at = ?, crash_unknown = 0, detail = ?, "
            "reason = ?, " + counts + " WHERE id = ?",
            [(s.response.value, _sqlite_time(s.response_at), s.detail or "", s.reason or "",
              *s.increments, stamp, s.id) for s in changed],
        )
    if counts_only:
        conn.exec_driver_sql(
            "UPDATE recipients SET " + counts + " WHERE id = ?",
            [(*s.increments, stamp, s.id) for s in counts_only],
        )


class _ContactEffects:
    """What the batch does to contacts, gathered per kind and written set-based at the end."""

    def __init__(self) -> None:
        self.hard: set[int] = set()
        self.complained: set[int] = set()
        self.unsubscribed: set[int] = set()
        self.type_opt_outs: set[tuple[int, int]] = set()
        self.resubscribe_all: set[int] = set()
        self.resubscribe_types: set[tuple[int, int]] = set()
        self.mailing_types: dict[int, int | None] = {}
        # Recipients with no contact (a transactional email to a bare address): their address
        # is remembered on the suppression list instead, {recipient id: reason}.
        self.bare: dict[int, str] = {}

    def _email_type(self, state: _State, event: Event) -> int | None:
        wanted = (event.detail or {}).get("email_type_id")
        if isinstance(wanted, int):
            return wanted
        if state.mailing_id not in self.mailing_types:
            self.mailing_types[state.mailing_id] = db.session.execute(
                select(Mailing.email_type_id).where(Mailing.id == state.mailing_id)
            ).scalar_one_or_none()
        return self.mailing_types[state.mailing_id]

    def note(self, state: _State, event: Event, applied: bool) -> None:
        contact = state.contact_id
        if event.kind not in rules.CONTACT_KINDS:
            return
        if contact is None:
            self._note_bare(state, event, applied)
            return
        scope = (event.detail or {}).get("scope", "all")
        type_id = self._email_type(state, event) if scope == "type" else None
        effect = rules.contact_effect(event.kind, applied=applied, scope=scope,
                                      has_type=type_id is not None)
        if effect is ContactEffect.INVALID:
            self.hard.add(contact)
        elif effect is ContactEffect.COMPLAINED:
            self.complained.add(contact)
        elif effect is ContactEffect.TYPE_OPT_OUT and type_id is not None:
            self.type_opt_outs.add((contact, type_id))
        elif effect is ContactEffect.UNSUBSCRIBED:
            self.unsubscribed.add(contact)
        elif effect is ContactEffect.TYPE_OPT_IN and type_id is not None:
            self.resubscribe_types.add((contact, type_id))
            self.type_opt_outs.discard((contact, type_id))
        elif effect is ContactEffect.RESUBSCRIBED:
            self.resubscribe_all.add(contact)
            self.unsubscribed.discard(contact)

    def _note_bare(self, state: _State, event: Event, applied: bool) -> None:
        effect = rules.contact_effect(event.kind, applied=applied)
        if effect is ContactEffect.INVALID:
            self.bare[state.id] = suppressions.HARD_BOUNCE
        elif effect is ContactEffect.COMPLAINED:
            self.bare.setdefault(state.id, suppressions.COMPLAINT)

    def write(self) -> None:
        now = datetime.now(UTC)
        if self.bare:
            addresses = dict(db.session.execute(
                select(RT.c.id, RT.c.address).where(RT.c.id.in_(sorted(self.bare)))).all())
            remembered: dict[str, str] = {}
            for rid, reason in self.bare.items():
                address = addresses.get(rid) or ""
                if remembered.get(address) != suppressions.HARD_BOUNCE:
                    remembered[address] = reason
            suppressions.remember(remembered)
        if self.hard:
            db.session.execute(
                update(Contact).where(Contact.id.in_(sorted(self.hard))).values(
                    do_not_email=True, do_not_email_reason="hard bounce", valid=False,
                    invalid_reason="hard bounce", updated_at=now,
                )
            )
        if self.complained:
            # A hard bounce already recorded stays the reason: it is the stronger one.
            db.session.execute(
                update(Contact).where(
                    Contact.id.in_(sorted(self.complained)),
                    Contact.do_not_email_reason != "hard bounce",
                ).values(do_not_email=True, do_not_email_reason="spam complaint", updated_at=now)
            )
        if self.unsubscribed:
            db.session.execute(
                update(Contact).where(
                    Contact.id.in_(sorted(self.unsubscribed)), Contact.do_not_email.is_(False)
                ).values(do_not_email=True, do_not_email_reason="unsubscribed", updated_at=now)
            )
        if self.resubscribe_all:
            # Only an unsubscribe is undone by the contact; a bounce or complaint is not theirs
            # to lift.
            db.session.execute(
                update(Contact).where(
                    Contact.id.in_(sorted(self.resubscribe_all)),
                    Contact.do_not_email_reason == "unsubscribed",
                ).values(do_not_email=False, do_not_email_reason="", updated_at=now)
            )
        for contact_id, type_id in sorted(self.resubscribe_types):
            db.session.execute(
                delete(TypeOptOut).where(TypeOptOut.contact_id == contact_id,
                                         TypeOptOut.email_type_id == type_id)
            )
        if self.type_opt_outs:
            rows = [{"contact_id": c, "email_type_id": t, "created_at": now}
                    for c, t in sorted(self.type_opt_outs)]
            dialect = db.session.get_bind().dialect.name
            ins = pg_insert if dialect == "postgresql" else sqlite_insert
            db.session.execute(ins(TypeOptOut).values(rows).on_conflict_do_nothing())


# ---------------------------------------------------------------- reading


hour_bucket = rules.hour_bucket


@lru_cache(maxsize=4096)
def _hour_counter(prefix: str, moment: datetime) -> str:
    """ "opens@2026-11-23T10": remembered, as a batch's events share a few seconds."""
    return f"{prefix}@{hour_bucket(moment)}"


def activity(mailing_id: int, kind: str = OPEN) -> list[tuple[datetime, int]]:
    """Opens (or clicks) per UTC hour for a mailing, oldest first, for the over-time chart."""
    if kind not in (OPEN, CLICK):
        raise ValueError("kind is open or click")
    prefix = ("opens@" if kind == OPEN else "clicks@")
    rows = db.session.execute(
        select(MailingCounter.name, MailingCounter.value).where(
            MailingCounter.mailing_id == mailing_id,
            and_(MailingCounter.name >= prefix, MailingCounter.name < prefix[:-1] + "A"),
        ).order_by(MailingCounter.name)
    )
    out = []
    for name, value in rows:
        hour = datetime.strptime(name[len(prefix):], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        out.append((hour, int(value)))
    return out


def timeline(recipient_id: int) -> list[ResponseEvent]:
    """A recipient's events in the order they happened (hand-off is recipient.handed_off_at)."""
    return list(db.session.execute(
        select(ResponseEvent).where(ResponseEvent.recipient_id == recipient_id)
        .order_by(ResponseEvent.occurred_at, ResponseEvent.id)
    ).scalars())


def email_types_left(contact_id: int) -> set[int]:
    """The email types a contact has left."""
    return set(db.session.execute(
        select(TypeOptOut.email_type_id).where(TypeOptOut.contact_id == contact_id)
    ).scalars())


def iter_chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Lists of at most `size` items, in order."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------- time rules

NO_REPORT_AFTER = timedelta(hours=rules.NO_REPORT_HOURS)


def silence_response() -> Response:
    """What 48 h of silence means: Delivered for plain SMTP and the capture server (they never
    report), Unknown for a provider that reports events (its silence is itself suspicious)."""
    provider = db.session.execute(
        select(Provider).where(Provider.is_default.is_(True)).limit(1)
    ).scalar_one_or_none()
    if provider is not None and provider.reports_events and provider.kind != "capture":
        return Response.UNKNOWN
    return Response.DELIVERED


def apply_silence_rule(now: datetime | None = None) -> dict[int, int]:
    """Recipients Sent to provider for 48 h with no report become Delivered or Unknown.

    Set-based per mailing (timeline rows by INSERT ... SELECT, one UPDATE, one counter bump), so a
    million silent recipients cost three statements. Returns {mailing_id: recipients changed}.
    """
    now = now or datetime.now(UTC)
    cutoff = now - NO_REPORT_AFTER
    target = silence_response()
    changed: dict[int, int] = {}
    mailing_ids = list(db.session.execute(
        select(Mailing.id).where(Mailing.started_at.is_not(None), Mailing.started_at <= cutoff)
        .order_by(Mailing.id)
    ).scalars())
    for mailing_id in mailing_ids:
        _lock_for_write()
        due = and_(RT.c.mailing_id == mailing_id, RT.c.response == Response.SENT.value,
                   RT.c.handed_off_at < cutoff)
        db.session.execute(insert(ET).from_select(
            ["recipient_id", "mailing_id", "kind", "source", "occurred_at", "received_at",
             "applied", "machine"],
            select(RT.c.id, RT.c.mailing_id, literal(target.value), literal("time_rule"),
                   literal(now, UTCDateTime()), literal(now, UTCDateTime()), true(), false())
            .where(due),
        ))
        count = int(db.session.execute(
            update(RT).where(due).values(response=target.value, response_at=now, updated_at=now,
                                         detail="no report within 48 hours")
        ).rowcount or 0)
        if count:
            deltas = {totals.response_key(Response.SENT): -count,
                      totals.response_key(target): count}
            if target is Response.DELIVERED:
                deltas["delivered_unique"] = count
            totals.bump(mailing_id, deltas)
            changed[mailing_id] = count
        db.session.commit()  # mailing by mailing: the write lock is held for one mailing at most
    return changed


def invalidate_soft_bouncers() -> int:
    """Contacts whose messages soft-bounced in 3 different mailings become invalid addresses.

    Only soft bounces that speak of the mailbox count (`events.counts_toward_invalid`): a spam
    filter, a block list or a refused sender says nothing about the address.
    """
    _lock_for_write()
    ignored = sorted(r.value for r in Reason if not rules.counts_toward_invalid(r.value))
    mailings_count = func.count(distinct(RT.c.mailing_id))
    rows = db.session.execute(
        select(RT.c.contact_id, mailings_count)
        .where(RT.c.response == Response.SOFT_BOUNCE.value, RT.c.contact_id.is_not(None),
               RT.c.reason.not_in(ignored))
        .group_by(RT.c.contact_id)
        .having(mailings_count >= rules.SOFT_BOUNCE_MAILINGS)
    ).all()
    now = datetime.now(UTC)
    changed = 0
    for contact_id, mailings in rows:
        changed += int(db.session.execute(
            update(Contact).where(Contact.id == contact_id, Contact.valid.is_(True)).values(
                valid=False, soft_bounce_mailings=mailings, updated_at=now,
                invalid_reason=f"soft bounces in {mailings} mailings",
            )
        ).rowcount or 0)
    return changed

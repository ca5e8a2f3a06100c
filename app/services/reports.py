"""What the dashboard shows: mailing lists with their totals, a mailing's email totals and
progress, the audience table with keyset pages, its CSV export, and a contact's email history.

Everything a poll reads comes from the mailing counters (O(1) at any audience size). The audience
table reads at most one page per response through the (mailing_id, response, id) index, so the last
page of a million recipients costs the same as the first.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import io
import logging
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select

from app.domain import events as event_rules
from app.domain import figures
from app.domain.bounces import LABELS as BOUNCE_REASONS
from app.domain.bounces import Reason
from app.domain.lifecycle import Status
from app.domain.responses import LABELS, Response
from app.domain.schedule import local_display
from app.extensions import db
from app.models import Mailing, Recipient, ResponseEvent, User, utcnow
from app.services import totals as totals_service

log = logging.getLogger(__name__)

LIVE = frozenset({Status.PREPARING, Status.SENDING})
INACTIVE = (Status.DRAFT, Status.SENT, Status.CANCELED, Status.INTERRUPTED)
INACTIVE_PAGE = 100
PAGE_SIZE = 50
SEARCH_LIMIT = 200
CSV_CHUNK = 5000

# Counters a list row needs; fetched for every listed mailing in one query.
ROW_COUNTERS = figures.ROW_COUNTERS


# ---------------------------------------------------------------- totals

# A mailing's figures as staff read them; every definition lives in app.domain.figures.
EmailTotals = figures.Figures


def email_totals(counters: Mapping[str, int]) -> EmailTotals:
    """The figures from a mailing's counters (app.services.totals / responses)."""
    return figures.figures(counters)


def counters_for(mailing_ids: Sequence[int], names: Iterable[str] = ROW_COUNTERS) -> dict[int, dict[str, int]]:
    """Selected counters of many mailings in one query (primary-key lookups)."""
    from app.models import MailingCounter

    out: dict[int, dict[str, int]] = {m: {} for m in mailing_ids}
    if not mailing_ids:
        return out
    rows = db.session.execute(
        select(MailingCounter.mailing_id, MailingCounter.name, MailingCounter.value).where(
            MailingCounter.mailing_id.in_(list(mailing_ids)),
            MailingCounter.name.in_(list(names)),
        )
    )
    for mailing_id, name, value in rows:
        out[mailing_id][name] = int(value)
    return out


# ---------------------------------------------------------------- progress

# Counts a batch's hand-off record without sending it over: "s:" accepted, "r:" refused (both
# answered by the server: sent), "h:" handed off.
_LEDGER_COUNT = """
local answered, handed = 0, 0
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local kind = string.sub(entry, 1, 2)
  if kind == 's:' or kind == 'r:' then answered = answered + 1
  elseif kind == 'h:' then handed = handed + 1 end
end
return {answered, handed}
"""
PACE_SAMPLES = 120


@dataclass(frozen=True)
class InFlight:
    """Batches claimed and not recorded yet, and what their hand-off records already say."""

    batches: int = 0
    sent: int = 0  # answered by the server (accepted or refused), still Planned in the database


def open_batches(mailing_id: int) -> list[int]:
    """The mailing's batches a sender still holds (or that wait for the reconciler)."""
    from app.models import SendBatch

    return list(db.session.execute(
        select(SendBatch.id).where(SendBatch.state == "claimed",
                                   SendBatch.mailing_id == mailing_id)
    ).scalars())


def in_flight(mailing_id: int) -> InFlight:
    """Read after the counters, so a batch recorded meanwhile is never counted twice."""
    batches = open_batches(mailing_id)
    if not batches:
        return InFlight()
    try:
        from app.redis_conn import get_redis

        redis = get_redis()
        script = redis.register_script(_LEDGER_COUNT)
        sent = sum(int(script(keys=[f"sb:ledger:{b}"])[0]) for b in batches)
    except (RedisError, RuntimeError) as exc:
        log.debug("hand-off records not read: %s", exc)
        sent = 0
    return InFlight(len(batches), sent)


def _cache_key(kind: str, mailing_id: int, *rest: str) -> str:
    """A Redis key for what the dashboard keeps about a mailing. The database's address is part
    of it, so a Redis shared by two databases never mixes their mailings."""
    where = zlib.crc32(str(db.engine.url).encode())
    return ":".join(("sb", kind, f"{where:08x}", str(mailing_id), *rest))


def _pace(mailing_id: int, processed: int, now: datetime) -> float | None:
    """Record this reading of the progress and return the recent pace (recipients/s)."""
    stamp = now.timestamp()
    key = _cache_key("pace", mailing_id)
    try:
        from app.redis_conn import get_redis

        pipe = get_redis().pipeline()
        pipe.rpush(key, f"{stamp:.3f}:{processed}")
        pipe.ltrim(key, -PACE_SAMPLES, -1)
        pipe.expire(key, 3600)
        pipe.lrange(key, 0, -1)
        raw = pipe.execute()[-1]
    except (RedisError, RuntimeError) as exc:
        log.debug("pace not recorded: %s", exc)
        return None
    samples = []
    for item in raw:
        t, _, n = item.decode().partition(":")
        try:
            samples.append((float(t), int(n)))
        except ValueError:
            continue
    samples.sort()
    return figures.pace(samples, stamp)


@dataclass(frozen=True)
class SendingProgress:
    started_at: datetime | None
    finished_at: datetime | None
    duration: timedelta | None
    time_left: timedelta | None
    percent: float
    sent: int = 0  # recorded + answered in batches still in flight
    waiting: int = 0  # not handed off yet
    batches_in_flight: int = 0
    deferred: int = 0  # of the waiting, refused for now by the SMTP server
    next_retry: datetime | None = None  # the earliest next attempt of a deferred recipient
    slowed_to: float | None = None  # messages/s while the relay asked us to slow down


def sending_progress(mailing: Mailing, t: EmailTotals, now: datetime | None = None,
                     flight: InFlight | None = None) -> SendingProgress:
    """Started, finished, duration (time spent Interrupted left out), % sent counting the
    messages of batches still in flight, and the time left at the pace of the last minute
    (None while there is no recent pace)."""
    now = now or utcnow()
    flight = flight or InFlight()
    sent = t.sent + flight.sent
    waiting = max(t.waiting - flight.sent, 0)
    duration = figures.sending_time(
        started=mailing.started_at, finished=mailing.finished_at, now=now,
        interrupted_seconds=mailing.interrupted_seconds or 0,
        interrupted_at=mailing.interrupted_at,
    )
    left = None
    if mailing.status in (Status.SENDING.value, Status.PREPARING.value):
        rate = _pace(mailing.id, t.audience - waiting, now)
        left = figures.time_left(waiting, rate)
    deferred = t.count(Response.DEFERRED)
    next_retry = None
    if deferred:
        from sqlalchemy import func

        next_retry = db.session.execute(
            select(func.min(Recipient.next_attempt_at)).where(
                Recipient.mailing_id == mailing.id,
                Recipient.response == Response.DEFERRED.value)).scalar_one()
    slowed_to = _slowed_to() if mailing.status == Status.SENDING.value else None
    return SendingProgress(mailing.started_at, mailing.finished_at, duration, left,
                           figures.percent_sent(sent, t.eligible), sent, waiting,
                           flight.batches, deferred, next_retry, slowed_to)


def _slowed_to() -> float | None:
    """The provider's current rate while it is lowered after a slow-down reply, else None."""
    from app.providers import rate
    from app.redis_conn import get_redis

    try:
        _, key, limit = rate.provider_settings()
        if rate.read_cut(get_redis(), key) is None:
            return None
        return rate.current_rate(get_redis(), key, limit)
    except (RedisError, RuntimeError):
        return None


def human_duration(value: timedelta | None) -> str:
    """'2 h 05 min', '3 min 20 s', '12 s'; an em dash when unknown."""
    if value is None:
        return "—"
    seconds = max(int(value.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24} d {hours % 24} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# ---------------------------------------------------------------- mailing lists


@dataclass
class MailingRow:
    mailing: Mailing
    owner: str
    totals: EmailTotals
    progress: SendingProgress | None = None
    when: str = ""


@dataclass
class Overview:
    current: list[MailingRow] = field(default_factory=list)
    scheduled: list[MailingRow] = field(default_factory=list)
    inactive: list[MailingRow] = field(default_factory=list)
    older_than: int | None = None  # keyset cursor for the next page of inactive mailings

    @property
    def live(self) -> bool:
        return bool(self.current)


def _rows(mailings: list[Mailing], now: datetime) -> list[MailingRow]:
    counters = counters_for([m.id for m in mailings])
    owners = _owner_names({m.owner_id for m in mailings if m.owner_id is not None})
    rows = []
    for m in mailings:
        t = email_totals(counters[m.id])
        row = MailingRow(m, owners.get(m.owner_id or 0, "—"), t)
        if m.status in LIVE:
            row.progress = sending_progress(m, t, now, in_flight(m.id))
        if m.send_at is not None and m.status == Status.SCHEDULED.value:
            row.when = local_display(m.send_at, m.send_at_zone or "UTC")
        rows.append(row)
    return rows


def _owner_names(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {i: name or email for i, name, email in db.session.execute(
        select(User.id, User.name, User.email).where(User.id.in_(ids)))}


def live_mailings() -> list[Mailing]:
    """Preparing and sending mailings in queue order (one-off messages left out)."""
    return list(db.session.execute(
        select(Mailing).where(Mailing.status.in_([s.value for s in LIVE]),
                              Mailing.one_off.is_(False))
        .order_by(Mailing.queued_at.is_(None), Mailing.queued_at, Mailing.id)
    ).scalars())


def overview(older_than: int | None = None, now: datetime | None = None) -> Overview:
    """The mailings page: Current (queue order), Scheduled (by send time), Inactive (newest
    first, a page at a time)."""
    now = now or utcnow()
    scheduled = list(db.session.execute(
        select(Mailing).where(Mailing.status == Status.SCHEDULED.value, Mailing.one_off.is_(False))
        .order_by(Mailing.send_at, Mailing.id)
    ).scalars())
    stmt = (select(Mailing).where(Mailing.status.in_([s.value for s in INACTIVE]),
                                  Mailing.one_off.is_(False))
            .order_by(Mailing.id.desc()).limit(INACTIVE_PAGE + 1))
    if older_than is not None:
        stmt = stmt.where(Mailing.id < older_than)
    inactive = list(db.session.execute(stmt).scalars())
    more = len(inactive) > INACTIVE_PAGE
    inactive = inactive[:INACTIVE_PAGE]
    return Overview(
        current=_rows(live_mailings(), now),
        scheduled=_rows(scheduled, now),
        inactive=_rows(inactive, now),
        older_than=inactive[-1].id if more else None,
    )


def current_rows(now: datetime | None = None) -> list[MailingRow]:
    """Just the Current section, for its poll."""
    return _rows(live_mailings(), now or utcnow())


# ---------------------------------------------------------------- the audience table

# key -> (label, responses), in the order the page shows them (app.domain.figures.TABS).
TABS: dict[str, tuple[str, tuple[Response, ...]]] = {
    tab.key: (tab.label, tab.responses) for tab in figures.TABS}
COLUMNS = (Recipient.id, Recipient.address, Recipient.contact_id, Recipient.response,
           Recipient.response_at, Recipient.opens, Recipient.clicks, Recipient.detail,
           Recipient.handed_off_at, Recipient.updated_at, Recipient.reason)


def tab_counts(counters: Mapping[str, int]) -> dict[str, int]:
    """Recipients per tab, from the counters (the same figures the totals show)."""
    return figures.figures(counters).tab_counts


def _only(tab: str) -> Any:
    """The extra condition of a tab that lists people by what they did, else None."""
    only = figures.TAB_BY_KEY[tab].only if tab in figures.TAB_BY_KEY else None
    if only is figures.Only.HUMAN_OPEN:
        return Recipient.opens > Recipient.machine_opens
    if only is figures.Only.HUMAN_CLICK:
        return Recipient.clicks > Recipient.machine_clicks
    return None


@dataclass
class AudiencePage:
    tab: str
    rows: list[Any]
    q: str = ""
    next_after: int | None = None
    prev_before: int | None = None
    first: bool = True
    last: bool = True
    truncated: bool = False  # a search shows at most SEARCH_LIMIT matches


def _present(responses: Sequence[Response], counters: Mapping[str, int] | None) -> list[Response]:
    if not counters:
        return list(responses)
    return [r for r in responses if counters.get(totals_service.response_key(r), 0) > 0]


def audience_page(mailing_id: int, tab: str = "all", *, q: str = "", after: int | None = None,
                  before: int | None = None, last: bool = False, size: int = PAGE_SIZE,
                  counters: Mapping[str, int] | None = None) -> AudiencePage:
    """One page of a mailing's recipients in a tab, in id order.

    Keyset pagination: `after` gives the page following that id, `before` the page preceding it,
    `last` the final page (the order reversed). Each response of the tab is read through the
    (mailing_id, response, id) index with its own LIMIT and the pieces are merged, so no page
    ever sorts more than a page per response.
    """
    if tab not in TABS:
        tab = "all"
    responses = _present(TABS[tab][1], counters)
    only = _only(tab)
    q = q.strip()
    if q:
        return _search(mailing_id, tab, responses, q)
    backward = last or before is not None
    rows: list[Any] = []
    if only is not None:
        # People who opened (clicked) whose response then moved on to a complaint, an
        # unsubscribe or a failure: few rows hidden among many, read as one list of ids.
        dense = _DENSE[tab]
        sparse = [r for r in responses if r not in dense]
        responses = [r for r in responses if r in dense]
        ids = _engaged_ids(mailing_id, tab, sparse, counters)
        if backward:
            end = bisect.bisect_left(ids, before) if before is not None else len(ids)
            picked = ids[max(end - size - 1, 0):end]
        else:
            start = bisect.bisect_right(ids, after) if after is not None else 0
            picked = ids[start:start + size + 1]
        if picked:
            rows.extend(db.session.execute(
                select(*COLUMNS).where(Recipient.id.in_(picked))).all())
    for response in responses:
        stmt = select(*COLUMNS).where(Recipient.mailing_id == mailing_id,
                                      Recipient.response == response.value)
        if only is not None:
            stmt = stmt.where(only)
        if backward:
            if before is not None:
                stmt = stmt.where(Recipient.id < before)
            stmt = stmt.order_by(Recipient.id.desc())
        else:
            if after is not None:
                stmt = stmt.where(Recipient.id > after)
            stmt = stmt.order_by(Recipient.id)
        rows.extend(db.session.execute(stmt.limit(size + 1)).all())
    rows.sort(key=lambda r: r.id, reverse=backward)
    more = len(rows) > size
    rows = rows[:size]
    if backward:
        rows.reverse()
        page = AudiencePage(tab, rows, first=not more, last=before is None)
    else:
        page = AudiencePage(tab, rows, first=after is None, last=not more)
    if rows:
        page.next_after = None if page.last else rows[-1].id
        page.prev_before = None if page.first else rows[0].id
    return page


# The response in which every recipient opened (clicked): read page by page. Clickers who
# never opened (images off) are common, so Clicked is not one of them for the Opened tab.
_DENSE = {"open": frozenset({Response.OPENED}), "click": frozenset({Response.CLICKED})}
ENGAGED_CACHE_TTL = 600


def _engaged_ids(mailing_id: int, tab: str, sparse: Sequence[Response],
                 counters: Mapping[str, int] | None) -> list[int]:
    """Ids, in order, of the tab's people among the `sparse` responses.

    Reading them costs one pass over those responses' rows, so the list is kept in Redis while
    the counters it depends on (the responses' sizes, opens and clicks) stay the same: a
    finished mailing's tab then costs a lookup. Without Redis or counters it is read each time.
    """
    if not sparse:
        return []
    key = version = None
    if counters is not None:
        names = [figures.response_counter(r) for r in sparse] + [
            figures.OPENS, figures.OPENS_MACHINE, figures.CLICKS, figures.CLICKS_MACHINE]
        version = ":".join(str(counters.get(n, 0)) for n in names)
        key = _cache_key("engaged", mailing_id, tab)
        try:
            from app.redis_conn import get_redis

            cached = get_redis().get(key)
        except (RedisError, RuntimeError):
            cached = None
        if cached:
            stored_version, _, raw = cached.decode().partition("|")
            if stored_version == version:
                return [int(x) for x in raw.split(",") if x]
    # Sorted here: an ORDER BY id would make SQLite walk the whole table by id instead of the
    # (mailing_id, response, id) index.
    ids = sorted(db.session.execute(
        select(Recipient.id).where(Recipient.mailing_id == mailing_id,
                                   Recipient.response.in_([r.value for r in sparse]),
                                   _only(tab))
    ).scalars())
    if key is not None:
        try:
            from app.redis_conn import get_redis

            get_redis().set(key, f"{version}|{','.join(map(str, ids))}", ex=ENGAGED_CACHE_TTL)
        except (RedisError, RuntimeError):
            pass
    return ids


def _search(mailing_id: int, tab: str, responses: Sequence[Response], q: str) -> AudiencePage:
    """Recipients whose address starts with `q` (the (mailing_id, address) index; range scan)."""
    values = [r.value for r in responses]
    stmt = (
        select(*COLUMNS)
        .where(Recipient.mailing_id == mailing_id, Recipient.address >= q,
               Recipient.address < q + "\U0010ffff")
        .order_by(Recipient.address, Recipient.id)
        .limit(SEARCH_LIMIT + 1)
    )
    if tab != "all":
        stmt = stmt.where(Recipient.response.in_(values))
    only = _only(tab)
    if only is not None:
        stmt = stmt.where(only)
    rows = list(db.session.execute(stmt).all())
    if not rows and q.lower() != q:
        return _search(mailing_id, tab, responses, q.lower())
    truncated = len(rows) > SEARCH_LIMIT
    return AudiencePage(tab, rows[:SEARCH_LIMIT], q=q, truncated=truncated)


def iter_audience(mailing_id: int, tab: str = "all",
                  counters: Mapping[str, int] | None = None) -> Iterator[Any]:
    """Every recipient of a tab in id order, read in keyset chunks (memory stays flat)."""
    responses = _present(TABS.get(tab, TABS["all"])[1], counters)
    only = _only(tab)

    def chunks(response: Response) -> Iterator[Any]:
        after = 0
        while True:
            stmt = select(*COLUMNS).where(Recipient.mailing_id == mailing_id,
                                          Recipient.response == response.value,
                                          Recipient.id > after)
            if only is not None:
                stmt = stmt.where(only)
            rows = db.session.execute(stmt.order_by(Recipient.id).limit(CSV_CHUNK)).all()
            yield from rows
            if len(rows) < CSV_CHUNK:
                return
            after = rows[-1].id

    return heapq.merge(*(chunks(r) for r in responses), key=lambda r: r.id)


CSV_HEADER = ("recipient_id", "address", "contact_id", "response", "response_label",
              "response_at", "opens", "clicks", "handed_off_at", "reason", "detail")


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def audience_csv(mailing_id: int, tab: str = "all",
                 counters: Mapping[str, int] | None = None) -> Iterator[str]:
    """The tab as CSV text, yielded in pieces for a streamed download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for n, r in enumerate(iter_audience(mailing_id, tab, counters), start=1):
        writer.writerow((
            r.id, _safe_cell(r.address), r.contact_id or "", r.response,
            LABELS[Response(r.response)], _iso(r.response_at), r.opens, r.clicks,
            _iso(r.handed_off_at), reason_label(r.reason), _safe_cell(r.detail or ""),
        ))
        if n % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _safe_cell(value: str) -> str:
    """Keep spreadsheet programs from running a cell as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


# ---------------------------------------------------------------- contact history


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    label: str
    source: str
    applied: bool = True
    machine: bool = False
    detail: str = ""


@dataclass
class HistoryEntry:
    recipient: Recipient
    mailing_id: int
    mailing_name: str
    one_off: bool
    timeline: list[TimelineItem]

    @property
    def response_label(self) -> str:
        return LABELS[Response(self.recipient.response)]

    @property
    def last_change(self) -> datetime | None:
        r = self.recipient
        moments = [m for m in (r.response_at, r.updated_at, r.handed_off_at) if m is not None]
        moments += [t.at for t in self.timeline]
        return max(moments) if moments else None


EVENT_LABELS = event_rules.LABELS


def event_label(kind: str) -> str:
    if kind in EVENT_LABELS:
        return EVENT_LABELS[kind]
    try:
        return LABELS[Response(kind)]
    except ValueError:
        return kind


def _detail_text(detail: Any) -> str:
    if not detail:
        return ""
    if isinstance(detail, Mapping):
        return ", ".join(f"{k}: {reason_label(v) if k == 'reason' else v}"
                         for k, v in detail.items() if k != "link_id")
    return str(detail)


def reason_label(value: Any) -> str:
    """A bounce reason in words ("mailbox full"), the value as it came if unknown, "" for none."""
    if not value:
        return ""
    try:
        return BOUNCE_REASONS[Reason(value)]
    except ValueError:
        return str(value)


def timeline(recipient: Recipient, events: Iterable[ResponseEvent]) -> list[TimelineItem]:
    """The hand-off followed by every recorded event, oldest first."""
    items = []
    if recipient.handed_off_at is not None:
        items.append(TimelineItem(recipient.handed_off_at, "Handed off to the provider", "smtp"))
    for e in events:
        items.append(TimelineItem(e.occurred_at, event_label(e.kind), e.source, e.applied,
                                  e.machine, _detail_text(e.detail)))
    items.sort(key=lambda i: i.at)
    return items


def contact_history(contact_id: int, limit: int = 50) -> list[HistoryEntry]:
    """Every mailing sent (or not sent) to a contact, newest first, each with its timeline."""
    rows = db.session.execute(
        select(Recipient, Mailing.name, Mailing.one_off)
        .join(Mailing, Mailing.id == Recipient.mailing_id)
        .where(Recipient.contact_id == contact_id)
        .order_by(Recipient.id.desc()).limit(limit)
    ).all()
    ids = [r.id for r, _, _ in rows]
    events: dict[int, list[ResponseEvent]] = {i: [] for i in ids}
    if ids:
        for e in db.session.execute(
            select(ResponseEvent).where(ResponseEvent.recipient_id.in_(ids))
            .order_by(ResponseEvent.recipient_id, ResponseEvent.id)
        ).scalars():
            events[e.recipient_id].append(e)
    return [HistoryEntry(r, r.mailing_id, name, bool(one_off), timeline(r, events[r.id]))
            for r, name, one_off in rows]


@dataclass(frozen=True)
class MessageView:
    raw: str
    html: str
    text: str
    subject: str


def message_view(data: bytes) -> MessageView:
    """The stored bytes as raw source plus the decoded HTML and text parts for display."""
    import email
    from email import policy

    msg = email.message_from_bytes(data, policy=policy.default)
    html = text = ""
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/html" and not html:
            html = str(part.get_content())
        elif ctype == "text/plain" and not text:
            text = str(part.get_content())
    return MessageView(data.decode("utf-8", "replace"), html, text, str(msg.get("Subject", "")))


__all__ = [
    "AudiencePage", "EmailTotals", "HistoryEntry", "MessageView", "Overview", "TABS",
    "audience_csv", "audience_page", "contact_history", "counters_for", "email_totals",
    "human_duration", "iter_audience", "message_view", "overview", "sending_progress",
    "tab_counts", "timeline",
]


# ---------------------------------------------------------------- editor helpers


def audience_preview(list_ids: Sequence[int], email_type_id: int | None, prevent_duplicates: bool,
                     mailing_id: int | None = None) -> dict[str, Any]:
    """The eligible count and the suppressed by reason for an audience as ticked in the editor.

    The eligibility rules are app.services.audience's own: for an audience not saved yet, a
    throwaway mailing carries the ticked lists inside a transaction that is rolled back.
    """
    from app.models import MailingList
    from app.services.audience import preview_counts

    try:
        saved = db.session.get(Mailing, mailing_id) if mailing_id else None
        if saved is not None and saved.chain_parent_id is not None:
            counts = preview_counts(saved)
        else:
            probe = Mailing(name="audience preview", status=Status.DRAFT.value,
                            email_type_id=email_type_id, prevent_duplicates=prevent_duplicates)
            db.session.add(probe)
            db.session.flush()
            for list_id in dict.fromkeys(list_ids):
                db.session.add(MailingList(mailing_id=probe.id, list_id=list_id))
            db.session.flush()
            counts = preview_counts(probe)
    finally:
        db.session.rollback()
    eligible = counts.pop(Response.PLANNED.value, 0)
    suppressed = sorted(((LABELS[Response(r)], n) for r, n in counts.items() if n),
                        key=lambda x: -x[1])
    return {"eligible": eligible, "suppressed": suppressed,
            "total": eligible + sum(n for _, n in suppressed)}


class TestSendError(RuntimeError):
    """The test message could not be handed over; the message says why."""

    __test__ = False  # not a pytest test class


def send_test(mailing: Mailing, address: str, name: str = "") -> bytes:
    """Send the mailing as it stands to one staff address through the configured SMTP path.

    No recipient row is created: the message is built from the current content (links not
    tracked, unsubscribe link pointing nowhere real) with a "[Test]" subject prefix, and with
    what the email type changes as the real send has it (no List-Unsubscribe headers for a type
    marked transactional).
    """
    import secrets

    from flask import current_app

    from app.providers.smtp import ConnectionLost, Outcome, SmtpTransport
    from app.services import sending
    from app.services.freeze import type_options
    from app.services.rendering import MessageBuilder, TemplateProblem, freeze, merge_data

    try:
        content = freeze(mailing, link_ids={}, base_url=current_app.config["BASE_URL"],
                         bounce_domain=current_app.config["BOUNCE_DOMAIN"],
                         **type_options(mailing))
        content["subject"] = "[Test] " + content["subject"]
        built = MessageBuilder(content).build(
            merge=merge_data(name, address, {}), address=address, token="test",
            message_id=f"test.{secrets.token_hex(8)}@{content['domain']}", sent_at=utcnow(),
        )
    except TemplateProblem as exc:
        raise TestSendError(f"the template cannot be used: {exc}") from exc
    if not mailing.from_address:
        raise TestSendError("the mailing needs a from address")
    smtp, _, _ = sending.provider_settings()
    transport = SmtpTransport(smtp)
    try:
        result = transport.send(built.envelope_from, address, built.data)
    except ConnectionLost as exc:
        raise TestSendError(str(exc)) from exc
    finally:
        transport.close()
    if result.outcome is not Outcome.ACCEPTED:
        raise TestSendError(f"the server refused it: {result.code} {result.text}")
    return built.data


# ---------------------------------------------------------------- the home page

HOME_SCHEDULED = 5  # scheduled mailings listed on the home page
HOME_RECENT = 10  # sent mailings in the home page's rates chart


@dataclass
class InterruptedRow:
    mailing: Mailing
    owner: str
    cause: str  # the cause in a few words (app.domain.interruptions)
    remaining: int  # recipients still Planned or Deferred


def interrupted_rows() -> list[InterruptedRow]:
    """Interrupted mailings, oldest interruption first, with their cause and what remains."""
    from sqlalchemy import func

    from app.domain import interruptions

    rows = list(db.session.execute(
        select(Mailing).where(Mailing.status == Status.INTERRUPTED.value,
                              Mailing.one_off.is_(False))
        .order_by(Mailing.interrupted_at, Mailing.id)
    ).scalars())
    if not rows:
        return []
    left: dict[int, int] = {mid: int(n) for mid, n in db.session.execute(
        select(Recipient.mailing_id, func.count())
        .where(Recipient.mailing_id.in_([m.id for m in rows]),
               Recipient.response.in_([Response.PLANNED.value, Response.DEFERRED.value]))
        .group_by(Recipient.mailing_id)
    )}
    owners = _owner_names({m.owner_id for m in rows if m.owner_id is not None})
    return [InterruptedRow(m, owners.get(m.owner_id or 0, "—"),
                           interruptions.CAUSE_LABELS[interruptions.cause_of(m.status_reason)],
                           int(left.get(m.id, 0)))
            for m in rows]


@dataclass(frozen=True)
class QuotaFigures:
    month: str
    used: int
    quota: int | None  # None: no monthly quota

    @property
    def left(self) -> int | None:
        return None if self.quota is None else max(self.quota - self.used, 0)

    @property
    def share(self) -> float:
        return min(self.used / self.quota, 1.0) if self.quota else 0.0


def quota_figures(now: datetime | None = None) -> QuotaFigures:
    """Messages handed off this month against the monthly quota (the figure the sending engine
    checks before every batch)."""
    from app.models import QuotaUsage
    from app.services import settings

    month = (now or utcnow()).strftime("%Y-%m")
    row = db.session.get(QuotaUsage, month)
    return QuotaFigures(month, int(row.used) if row else 0,
                        int(settings.get("monthly_quota")) or None)


@dataclass(frozen=True)
class ContactFigures:
    total: int
    eligible: int
    held: dict[Response, int]  # held back, each contact once, by the first rule that holds it


def contact_figures(now: datetime | None = None) -> ContactFigures:
    """Every contact judged by the eligibility rules a mailing's audience is built with
    (app.services.audience, in their priority order: do not email, invalid address, inactive),
    for a mailing of no particular email type: the same numbers the contacts page's filters and
    a mailing to everyone arrive at."""
    from sqlalchemy import func, literal

    from app.models import Contact
    from app.services import audience

    everyone = select(Contact.id.label("contact_id"), literal(1).label("rank")).subquery("members")
    stand_in = Mailing(prevent_duplicates=False, email_type_id=None)
    response = audience._response_expr(stand_in, everyone, now or utcnow()).label("response")
    inner = (select(response)
             .select_from(everyone.join(Contact, Contact.id == everyone.c.contact_id)).subquery())
    counts = {Response(r): int(n) for r, n in db.session.execute(
        select(inner.c.response, func.count()).group_by(inner.c.response))}
    eligible = counts.pop(Response.PLANNED, 0)
    return ContactFigures(total=eligible + sum(counts.values()), eligible=eligible,
                          held={r: n for r, n in counts.items() if n})


@dataclass(frozen=True)
class RecentRates:
    mailing: Mailing
    totals: EmailTotals

    @property
    def bounce_rate(self) -> float:
        """Soft and hard bounces per message sent."""
        return self.totals.bounced / self.totals.sent if self.totals.sent else 0.0


def recent_rates(limit: int = HOME_RECENT) -> list[RecentRates]:
    """The last sent mailings (oldest first, for a left-to-right chart) with their figures."""
    sent = list(db.session.execute(
        select(Mailing).where(Mailing.status == Status.SENT.value, Mailing.one_off.is_(False))
        .order_by(Mailing.finished_at.desc(), Mailing.id.desc()).limit(limit)
    ).scalars())
    sent.reverse()
    counters = counters_for([m.id for m in sent])
    return [RecentRates(m, email_totals(counters[m.id])) for m in sent]


@dataclass
class HomeFigures:
    sending: list[MailingRow]
    interrupted: list[InterruptedRow]
    scheduled: list[MailingRow]
    quota: QuotaFigures
    contacts: ContactFigures
    recent: list[RecentRates]


def home_figures(now: datetime | None = None) -> HomeFigures:
    now = now or utcnow()
    scheduled = list(db.session.execute(
        select(Mailing).where(Mailing.status == Status.SCHEDULED.value, Mailing.one_off.is_(False))
        .order_by(Mailing.send_at, Mailing.id).limit(HOME_SCHEDULED)
    ).scalars())
    return HomeFigures(sending=current_rows(now), interrupted=interrupted_rows(),
                       scheduled=_rows(scheduled, now), quota=quota_figures(now),
                       contacts=contact_figures(now), recent=recent_rates())

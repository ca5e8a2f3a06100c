"""Mailings: list, read with status and figures, create a draft, schedule, send now, cancel,
resume; recipients with their responses and each recipient's timeline.

Figures come from the mailing's counters through app.domain.figures, progress from
app.services.reports.sending_progress: the same definitions and reads as the mailing page, so
the API and the dashboard always show the same numbers. Actions go through
app.services.mailings, the functions the dashboard's buttons call, with the same refusals.
A mailing's A/B test and send window (set on create and by PATCH) go through app.api.ab_window:
the editor's rules and services, and the mailing page's variant figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from app.api import ab_window
from app.api.ab_window import AbTestIn, AbTestOut, SendWindowIn, SendWindowOut
from app.api.auth import audit
from app.api.pagination import MAX_LIMIT, PageQuery, decode_cursor, encode_cursor
from app.api.problems import PROBLEM_TYPES, ApiProblem, invalid, not_found
from app.api.registry import endpoint
from app.api.types import Email, Id, Name, Text, Time, Zone
from app.domain import figures
from app.domain.lifecycle import STATUS_LABELS, Status
from app.domain.responses import LABELS, Response
from app.domain.schedule import ScheduleError, check_future
from app.extensions import db
from app.inputs import MAX_ID
from app.models import ContactList, EmailType, Mailing, MailingVariant, Recipient, utcnow
from app.services import ab_tests, reports, totals
from app.services import mailings as mailing_service
from app.services import responses as response_service
from app.services.rendering import TemplateProblem, check_template

PROBLEM_TYPES.setdefault(
    "refused-action",
    "The mailing's state (or content) does not allow this action now; `detail` says why, in "
    "the words the dashboard uses.")

COUNTERS = (*figures.ROW_COUNTERS, figures.OPENS, figures.OPENS_MACHINE, figures.CLICKS,
            figures.CLICKS_MACHINE, figures.OPENED_UNIQUE, figures.CLICKED_UNIQUE,
            figures.DELIVERED_UNIQUE, figures.RECIPIENTS)


# ---------------------------------------------------------------- models


class TotalsOut(BaseModel):
    """A mailing's figures, defined once (docs/ARCHITECTURE.md, "Figures")."""

    audience: int = Field(description="Every recipient: waiting + sent + not_sent")
    eligible: int = Field(description="Planned when prepared: the denominator of percent_sent")
    waiting: int
    sent: int = Field(description="Left Sendboard, bounces included")
    not_sent: int
    not_sent_by_reason: dict[str, int]
    delivered: int = Field(description="Recipients known delivered at some point")
    opens: int
    opens_human: int
    opens_machine: int
    clicks: int
    clicks_human: int
    clicks_machine: int
    openers: int = Field(description="Recipients with any open, people or machines")
    clickers: int
    people_opened: int = Field(description="Recipients with an open by a person")
    people_clicked: int
    machine_only_openers: int
    machine_only_clickers: int
    open_rate: float = Field(description="People who opened per message sent (0 to 1)")
    click_rate: float
    bounced: int
    soft_bounces: int
    hard_bounces: int
    blocked: int
    dropped: int
    complaints: int
    unsubscribed: int
    responses: dict[str, int] = Field(description="Recipients per current response")
    tabs: dict[str, int] = Field(description="Recipients per dashboard audience tab")


class ProgressOut(BaseModel):
    percent_sent: float = Field(description="Sent of eligible, batches in flight included")
    sent: int = Field(description="Sent, counting the answered messages of batches in flight")
    waiting: int
    deferred: int
    next_retry: datetime | None
    batches_in_flight: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None = Field(description="Sending time, Interrupted time left out")
    time_left_seconds: float | None = Field(description="At the last minute's pace; null without one")


class MailingOut(BaseModel):
    id: int
    name: str
    status: str
    status_label: str
    status_reason: str
    subject: str
    from_name: str
    from_address: str
    reply_to: str
    email_type_id: int | None
    list_ids: list[int]
    one_off: bool = Field(description="A one-off or transactional message (not listed)")
    send_at: datetime | None
    send_at_zone: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    totals: TotalsOut
    progress: ProgressOut | None = Field(None, description="Only when one mailing is read")
    ab_test: AbTestOut | None = Field(
        None, description="Its A/B subject test (null: none); variant figures when one is read")
    send_window: SendWindowOut | None = Field(
        None, description="Its send window and local delivery (null: neither)")


class MailingPage(BaseModel):
    data: list[MailingOut]
    next_cursor: str | None


class MailingsQuery(PageQuery):
    status: Status | None = Field(None, description="Only mailings in this status")


class MailingIn(BaseModel):
    """A new Draft. Templates are checked now; sending needs a subject, a from address, a body,
    an unsubscribe link and an audience, checked when it is scheduled or sent."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Name, Field(min_length=1)]
    subject: Annotated[Text, Field(max_length=500)] = ""
    from_name: Name = ""
    from_address: Email | None = None
    reply_to: Email | None = None
    html: Annotated[Text, Field(max_length=1_000_000)] = ""
    text: Annotated[Text, Field(max_length=1_000_000)] = ""
    email_type_id: Id | None = None
    list_ids: list[Id] = Field(default_factory=list, max_length=1000,
                               description="Its audience: lists and segments")
    prevent_duplicates: bool = True
    send_until: Time | None = None
    utm_source: Annotated[Name, Field(max_length=100)] = ""
    utm_medium: Annotated[Name, Field(max_length=100)] = ""
    utm_campaign: Annotated[Name, Field(max_length=100)] = ""
    ab_test: AbTestIn | None = Field(None, description="An A/B test of subjects; none if left out")
    send_window: SendWindowIn | None = Field(
        None, description="A send window and local delivery; none if left out")


class MailingPatch(BaseModel):
    """Change an editable mailing's A/B test or send window: a field left out stays as it is,
    null removes it, an object replaces it whole."""

    model_config = ConfigDict(extra="forbid")

    ab_test: AbTestIn | None = Field(None, description="null: no A/B test")
    send_window: SendWindowIn | None = Field(None, description="null: no window, no local delivery")


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    send_at: Time
    zone: Zone = Field("UTC", description="The zone the mailing's time is shown in (IANA)")

    @field_validator("zone")
    @classmethod
    def _zone_given(cls, value: str) -> str:
        return value or "UTC"


class RecipientOut(BaseModel):
    id: int
    contact_id: int | None
    address: str
    response: str
    response_label: str
    response_at: datetime | None
    reason: str = Field(description="A bounce or block's reason, else empty")
    detail: str
    opens: int
    clicks: int
    handed_off_at: datetime | None
    updated_at: datetime | None


class RecipientPage(BaseModel):
    data: list[RecipientOut]
    next_cursor: str | None


class RecipientsQuery(PageQuery):
    response: str | None = Field(
        None, max_length=500,
        description="Only these responses, comma-separated (e.g. opened,clicked)")


class TimelineEntry(BaseModel):
    id: int | None = Field(description="The response event's id (null for the hand-off)")
    kind: str = Field(description="handed_off, or the event: delivered, open, click, ...")
    label: str
    source: str
    occurred_at: datetime
    received_at: datetime | None
    applied: bool = Field(description="Whether it changed the recipient's response")
    machine: bool
    detail: dict[str, Any]


class TimelineOut(BaseModel):
    recipient: RecipientOut
    events: list[TimelineEntry]


# ---------------------------------------------------------------- reading


def totals_out(t: figures.Figures) -> TotalsOut:
    return TotalsOut(
        audience=t.audience, eligible=t.eligible, waiting=t.waiting, sent=t.sent,
        not_sent=t.not_sent,
        not_sent_by_reason={r.value: n for r, n in t.not_sent_by_reason.items()},
        delivered=t.delivered_known, opens=t.opens, opens_human=t.opens_human,
        opens_machine=t.opens_machine, clicks=t.clicks, clicks_human=t.clicks_human,
        clicks_machine=t.clicks_machine, openers=t.openers, clickers=t.clickers,
        people_opened=t.openers_human,
        people_clicked=t.clickers_human, machine_only_openers=t.openers_machine_only,
        machine_only_clickers=t.clickers_machine_only, open_rate=t.open_rate,
        click_rate=t.click_rate, bounced=t.bounced, soft_bounces=t.soft_bounces,
        hard_bounces=t.hard_bounces, blocked=t.blocked, dropped=t.dropped,
        complaints=t.complaints, unsubscribed=t.unsubscribed,
        responses={r.value: n for r, n in t.responses.items() if n},
        tabs=t.tab_counts,
    )


def _mailing_out(m: Mailing, counters: dict[str, int], list_ids: list[int],
                 progress: bool = False, variants: list[MailingVariant] | None = None,
                 ) -> MailingOut:
    t = reports.email_totals(counters)
    out = MailingOut(
        id=m.id, name=m.name, status=m.status, status_label=STATUS_LABELS[m.status_enum],
        status_reason=m.status_reason or "", subject=m.subject or "", from_name=m.from_name or "",
        from_address=m.from_address or "", reply_to=m.reply_to or "",
        email_type_id=m.email_type_id, list_ids=list_ids, one_off=bool(m.one_off),
        send_at=m.send_at, send_at_zone=m.send_at_zone or "UTC", created_at=m.created_at,
        updated_at=m.updated_at, started_at=m.started_at, finished_at=m.finished_at,
        totals=totals_out(t), progress=None,
        ab_test=ab_window.ab_test_out(m, variants, figures=progress),
        send_window=ab_window.send_window_out(m),
    )
    if progress:
        flight = reports.in_flight(m.id)  # after the counters: nothing counted twice
        p = reports.sending_progress(m, t, utcnow(), flight)
        out.progress = ProgressOut(
            percent_sent=p.percent, sent=p.sent, waiting=p.waiting, deferred=p.deferred,
            next_retry=p.next_retry, batches_in_flight=p.batches_in_flight,
            started_at=p.started_at, finished_at=p.finished_at,
            duration_seconds=p.duration.total_seconds() if p.duration is not None else None,
            time_left_seconds=p.time_left.total_seconds() if p.time_left is not None else None,
        )
    return out


def _mailing(mailing_id: int) -> Mailing:
    mailing = db.session.get(Mailing, mailing_id) if 0 < mailing_id < MAX_ID else None
    if mailing is None:
        raise not_found("mailing with this id")
    return mailing


def _one(mailing: Mailing) -> MailingOut:
    db.session.refresh(mailing)
    return _mailing_out(mailing, totals.get(mailing.id), mailing_service.list_ids(mailing),
                        progress=True)


def _variants_of(ids: Sequence[int]) -> dict[int, list[MailingVariant]]:
    out: dict[int, list[MailingVariant]] = {i: [] for i in ids}
    if ids:
        for variant in db.session.execute(
            select(MailingVariant).where(MailingVariant.mailing_id.in_(list(ids)))
            .order_by(MailingVariant.mailing_id, MailingVariant.position)
        ).scalars():
            out[variant.mailing_id].append(variant)
    return out


def _list_ids_of(ids: Sequence[int]) -> dict[int, list[int]]:
    from app.models import MailingList

    out: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for mailing_id, list_id in db.session.execute(
            select(MailingList.mailing_id, MailingList.list_id)
            .where(MailingList.mailing_id.in_(list(ids))).order_by(MailingList.list_id)
        ):
            out[mailing_id].append(list_id)
    return out


@endpoint("GET", "/mailings", scope="mailings:read", query=MailingsQuery, response=MailingPage,
          tag="Mailings", summary="List mailings")
def list_mailings(query: MailingsQuery) -> dict[str, Any]:
    """Mailings in id order with their status and figures (one-off and transactional messages
    are not listed, as on the dashboard)."""
    stmt = select(Mailing).where(Mailing.one_off.is_(False))
    if query.status is not None:
        stmt = stmt.where(Mailing.status == query.status.value)
    scope = f"mailings:{query.status.value if query.status else ''}"
    if query.cursor:
        stmt = stmt.where(Mailing.id > decode_cursor(query.cursor, scope))
    rows = list(db.session.execute(stmt.order_by(Mailing.id).limit(query.limit + 1)).scalars())
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    ids = [m.id for m in rows]
    counters = reports.counters_for(ids, COUNTERS)
    lists = _list_ids_of(ids)
    variants = _variants_of(ids)
    return {"data": [_mailing_out(m, counters[m.id], lists[m.id], variants=variants[m.id])
                     for m in rows],
            "next_cursor": encode_cursor(rows[-1].id, scope) if more and rows else None}


@endpoint("GET", "/mailings/<int:mailing_id>", scope="mailings:read", response=MailingOut,
          tag="Mailings", summary="Read a mailing with its status, figures and progress",
          errors=(404,))
def read_mailing(mailing_id: int) -> MailingOut:
    """The figures are the mailing page's: the same counters read through the same definitions."""
    mailing = _mailing(mailing_id)
    return _mailing_out(mailing, totals.get(mailing.id), mailing_service.list_ids(mailing),
                        progress=True)


# ---------------------------------------------------------------- changing


@endpoint("POST", "/mailings", scope="mailings:write", body=MailingIn, response=MailingOut,
          status=201, tag="Mailings", summary="Create a draft mailing")
def create_mailing(body: MailingIn) -> MailingOut:
    for name, what, value in (("subject", "Subject", body.subject),
                              ("html", "HTML body", body.html), ("text", "Text body", body.text)):
        try:
            check_template(value, what)
        except TemplateProblem as exc:
            raise invalid(name, f"the template cannot be used: {exc}") from None
    if body.email_type_id is not None and db.session.get(EmailType, body.email_type_id) is None:
        raise invalid("email_type_id", "there is no email type with this id")
    found = set(db.session.execute(
        select(ContactList.id).where(ContactList.id.in_(body.list_ids))).scalars()) \
        if body.list_ids else set()
    for index, list_id in enumerate(body.list_ids):
        if list_id not in found:
            raise invalid(f"list_ids.{index}", "there is no list or segment with this id")
    try:
        mailing = mailing_service.new_draft(
            owner_id=None, name=body.name, list_ids=list(body.list_ids), subject=body.subject,
            from_name=body.from_name, from_address=body.from_address or "",
            reply_to=body.reply_to or "", html_body=body.html, text_body=body.text,
            email_type_id=body.email_type_id, prevent_duplicates=body.prevent_duplicates,
            send_until=body.send_until, utm_source=body.utm_source, utm_medium=body.utm_medium,
            utm_campaign=body.utm_campaign,
        )
    except mailing_service.MailingError as exc:
        raise invalid("body", str(exc)) from None
    audit("mailing.create", mailing, f"named {mailing.name!r}")
    if body.ab_test is not None or body.send_window is not None:
        _store_setup(mailing, body, {"ab_test", "send_window"})
    return _one(mailing)


def _store_setup(mailing: Mailing, body: MailingIn | MailingPatch, given: set[str]) -> None:
    """The A/B test and window given in the body, through the editor's services (the same
    rules and storage as the dashboard's form), audited as the dashboard does."""
    if "ab_test" in given:
        ab_window.store_ab_test(mailing, body.ab_test)
    if "send_window" in given:
        ab_window.store_send_window(mailing, body.send_window)
    audit("mailing.ab_window", mailing, ab_tests.setup_summary(mailing))


@endpoint("PATCH", "/mailings/<int:mailing_id>", scope="mailings:write", body=MailingPatch,
          response=MailingOut, tag="Mailings", summary="Change a mailing's A/B test or send window",
          errors=(404, 409))
def update_mailing(mailing_id: int, body: MailingPatch) -> MailingOut:
    """Only while the mailing can be edited (a Draft, or Scheduled outside the 5 minutes before
    its send time), as on the dashboard: 409 once sending has started or is about to."""
    mailing = _mailing(mailing_id)
    if mailing_service.locked(mailing):
        raise _refused(mailing_service.MailingError(
            "This mailing can no longer be edited: sending has started or is about to."))
    given = set(body.model_fields_set)
    if given:
        _store_setup(mailing, body, given)
    return _one(mailing)


def _refused(exc: Exception) -> ApiProblem:
    return ApiProblem(409, str(exc), slug="refused-action", title="Action refused")


def _act(mailing_id: int, action: str, do: Any) -> MailingOut:
    mailing = _mailing(mailing_id)
    try:
        do(mailing)
    except mailing_service.MailingError as exc:
        raise _refused(exc) from None
    audit(action, mailing, f"now {mailing.status}")
    return _one(mailing)


@endpoint("POST", "/mailings/<int:mailing_id>/schedule", scope="mailings:send", body=ScheduleIn,
          response=MailingOut, tag="Mailings", summary="Schedule (or reschedule) a mailing",
          errors=(404, 409))
def schedule_mailing(mailing_id: int, body: ScheduleIn) -> MailingOut:
    """Draft (or Scheduled, outside its 5-minute lock) -> Scheduled at `send_at`."""
    mailing = _mailing(mailing_id)
    try:
        check_future(body.send_at, utcnow())
    except ScheduleError as exc:
        raise invalid("send_at", str(exc)) from None
    local = body.send_at.astimezone(ZoneInfo(body.zone)).replace(tzinfo=None)
    try:
        resolved = mailing_service.schedule(mailing, local, body.zone)
    except mailing_service.MailingError as exc:
        raise _refused(exc) from None
    audit("mailing.schedule", mailing, f"{resolved.utc.isoformat()} ({resolved.zone})")
    return _one(mailing)


@endpoint("POST", "/mailings/<int:mailing_id>/send", scope="mailings:send", response=MailingOut,
          tag="Mailings", summary="Send a mailing now", errors=(404, 409))
def send_mailing(mailing_id: int) -> MailingOut:
    """Draft -> Preparing: the same checks as the Send now button (audience, unsubscribe link,
    a message that builds)."""
    return _act(mailing_id, "mailing.send", mailing_service.send_now)


@endpoint("POST", "/mailings/<int:mailing_id>/cancel", scope="mailings:send", response=MailingOut,
          tag="Mailings", summary="Cancel a mailing", errors=(404, 409))
def cancel_mailing(mailing_id: int) -> MailingOut:
    """A scheduled mailing returns to Draft; a sending one stops within about a second and its
    recipients not sent become Canceled."""
    return _act(mailing_id, "mailing.cancel", mailing_service.cancel)


@endpoint("POST", "/mailings/<int:mailing_id>/resume", scope="mailings:send", response=MailingOut,
          tag="Mailings", summary="Resume an interrupted mailing", errors=(404, 409))
def resume_mailing(mailing_id: int) -> MailingOut:
    return _act(mailing_id, "mailing.resume", mailing_service.resume)


# ---------------------------------------------------------------- recipients


def _recipient_out(r: Any) -> RecipientOut:
    return RecipientOut(
        id=r.id, contact_id=r.contact_id, address=r.address, response=r.response,
        response_label=LABELS.get(Response(r.response), r.response), response_at=r.response_at,
        reason=r.reason or "", detail=r.detail or "", opens=r.opens or 0, clicks=r.clicks or 0,
        handed_off_at=r.handed_off_at, updated_at=r.updated_at,
    )


def _responses(raw: str | None) -> list[Response]:
    if raw is None or not raw.strip():
        return list(Response)
    wanted = []
    for part in raw.split(","):
        try:
            wanted.append(Response(part.strip()))
        except ValueError:
            raise invalid("response", f"{part.strip()[:40]!r} is not a response; use "
                                      f"{', '.join(r.value for r in Response)}") from None
    return list(dict.fromkeys(wanted))


@endpoint("GET", "/mailings/<int:mailing_id>/recipients", scope="mailings:read",
          query=RecipientsQuery, response=RecipientPage, tag="Mailings",
          summary="A mailing's recipients with their responses", errors=(404,))
def list_recipients(mailing_id: int, query: RecipientsQuery) -> dict[str, Any]:
    """In id order, optionally only some responses. Each response is read through its own index
    with its own limit and the pieces merged, so a page costs the same at a million recipients."""
    mailing = _mailing(mailing_id)
    wanted = _responses(query.response)
    counters = totals.get(mailing.id)
    present = [r for r in wanted if counters.get(totals.response_key(r), 0) > 0]
    scope = f"recipients:{mailing.id}:{','.join(sorted(r.value for r in wanted))}"
    after = decode_cursor(query.cursor, scope) if query.cursor else 0
    size = min(query.limit, MAX_LIMIT)
    rows: list[Any] = []
    for response in present:
        rows.extend(db.session.execute(
            select(*reports.COLUMNS).where(Recipient.mailing_id == mailing.id,
                                           Recipient.response == response.value,
                                           Recipient.id > after)
            .order_by(Recipient.id).limit(size + 1)).all())
    rows.sort(key=lambda r: r.id)
    more = len(rows) > size
    rows = rows[:size]
    return {"data": [_recipient_out(r) for r in rows],
            "next_cursor": encode_cursor(rows[-1].id, scope) if more and rows else None}


@endpoint("GET", "/mailings/<int:mailing_id>/recipients/<int:recipient_id>/timeline",
          scope="mailings:read", response=TimelineOut, tag="Mailings",
          summary="One recipient's timeline", errors=(404,))
def recipient_timeline(mailing_id: int, recipient_id: int) -> TimelineOut:
    """The hand-off, then every event recorded for the recipient (applied or not), oldest first."""
    mailing = _mailing(mailing_id)
    row = db.session.get(Recipient, recipient_id) if 0 < recipient_id < MAX_ID else None
    if row is None or row.mailing_id != mailing.id:
        raise not_found("recipient with this id in this mailing")
    entries = []
    if row.handed_off_at is not None:
        entries.append(TimelineEntry(
            id=None, kind="handed_off", label="Handed off to the provider", source="smtp",
            occurred_at=row.handed_off_at, received_at=row.handed_off_at, applied=True,
            machine=False, detail={"message_id": row.message_id} if row.message_id else {}))
    for e in response_service.timeline(row.id):
        entries.append(TimelineEntry(
            id=e.id, kind=e.kind, label=reports.event_label(e.kind), source=e.source,
            occurred_at=e.occurred_at, received_at=e.received_at, applied=bool(e.applied),
            machine=bool(e.machine), detail=dict(e.detail) if isinstance(e.detail, dict) else {}))
    entries.sort(key=lambda x: (x.occurred_at, x.id or 0))
    recipient = db.session.execute(
        select(*reports.COLUMNS).where(Recipient.id == row.id)).one()
    return TimelineOut(recipient=_recipient_out(recipient), events=entries)

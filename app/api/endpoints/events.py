"""Response events for systems that poll: ``GET /events?cursor=...`` gives every event after the
cursor in the order they were recorded (response_events.id), each exactly once.

Ids are handed out when an event is inserted, not when its transaction commits, so id 11 may
become visible after id 12. A page therefore stops before a missing id until the event after
the gap is a few seconds old (app.domain.webhooks_out.deliverable_up_to, the rule outbound
webhooks follow): by then the missing id is a rolled-back insert, never an event still on its
way. Unlike other lists, ``next_cursor`` is always given, also on the last page: keep it and
ask again later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from app.api.pagination import PageQuery, decode_cursor, encode_cursor
from app.api.registry import endpoint
from app.api.types import Id
from app.domain.webhooks_out import deliverable_up_to
from app.extensions import db
from app.models import Recipient, ResponseEvent, utcnow
from app.services import reports

SCOPE = "events"


class EventsQuery(PageQuery):
    mailing_id: Id | None = Field(None, description="Only this mailing's events")


class EventOut(BaseModel):
    id: int
    kind: str = Field(description="A response (delivered, hard_bounce, spam, unsubscribed, ...), "
                                  "or open / click")
    label: str
    mailing_id: int
    recipient_id: int
    contact_id: int | None
    email: str
    source: str = Field(description="smtp, tracking, dsn, sendgrid, mailgun, generic, ...")
    occurred_at: datetime
    received_at: datetime
    applied: bool = Field(description="Whether it changed the recipient's response")
    machine: bool = Field(description="An open or click by a privacy proxy or a link scanner")
    detail: dict[str, Any]


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str = Field(description="Always given: pass it as `cursor` next time")
    more: bool = Field(description="True when more events are ready: ask again at once")


@endpoint("GET", "/events", scope="events:read", query=EventsQuery, response=EventPage,
          tag="Events", summary="Response events after a cursor, each once")
def list_events(query: EventsQuery) -> dict[str, Any]:
    """Every response event (delivered, opens, clicks, bounces, complaints, unsubscribes, ...)
    after `cursor`, oldest first. Without a cursor, from the first event."""
    scope = f"{SCOPE}:{query.mailing_id or ''}"
    cursor = decode_cursor(query.cursor, scope) if query.cursor else 0
    # The gap rule is judged on every event after the cursor, also with a mailing's filter: the
    # cursor moves over the others' ids, which that page leaves out.
    considered = [(int(i), at) for i, at in db.session.execute(
        select(ResponseEvent.id, ResponseEvent.received_at).where(ResponseEvent.id > cursor)
        .order_by(ResponseEvent.id).limit(query.limit + 1)).all()]
    waiting = len(considered) > query.limit
    considered = considered[:query.limit]
    last = deliverable_up_to(cursor, considered, utcnow())
    more = waiting and last == considered[-1][0]
    data: list[EventOut] = []
    if last > cursor:
        rows = select(ResponseEvent, Recipient.contact_id, Recipient.address).join(
            Recipient, Recipient.id == ResponseEvent.recipient_id
        ).where(ResponseEvent.id > cursor, ResponseEvent.id <= last)
        if query.mailing_id is not None:
            rows = rows.where(ResponseEvent.mailing_id == query.mailing_id)
        for e, contact_id, address in db.session.execute(rows.order_by(ResponseEvent.id)):
            data.append(EventOut(
                id=e.id, kind=e.kind, label=reports.event_label(e.kind), mailing_id=e.mailing_id,
                recipient_id=e.recipient_id, contact_id=contact_id, email=address,
                source=e.source, occurred_at=e.occurred_at, received_at=e.received_at,
                applied=bool(e.applied), machine=bool(e.machine),
                detail=dict(e.detail) if isinstance(e.detail, dict) else {}))
    return {"data": data, "next_cursor": encode_cursor(last, scope), "more": more}

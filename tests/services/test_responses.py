"""apply_event / apply_events: timeline, response rules, counters, contact effects, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, EmailType, Mailing, Recipient, ResponseEvent, TypeOptOut
from app.services import responses, totals
from app.services.responses import Event, EventError, apply_event, apply_events

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def make_mailing(n: int = 3, *, email_type: bool = False) -> tuple[Mailing, list[Recipient]]:
    """A sent mailing with `n` recipients handed off at T0, counters as the sender leaves them."""
    etype = None
    if email_type:
        etype = EmailType(name="Newsletter")
        db.session.add(etype)
        db.session.flush()
    mailing = Mailing(name="Autumn", status="sent", email_type_id=etype.id if etype else None)
    db.session.add(mailing)
    db.session.flush()
    rows = []
    for i in range(n):
        contact = Contact(email=f"p{i}@example.org", email_key=f"p{i}@example.org")
        db.session.add(contact)
        db.session.flush()
        rows.append(Recipient(mailing_id=mailing.id, contact_id=contact.id,
                              address=contact.email, response=Response.SENT.value,
                              message_id=f"r{i}.abc@sendboard.local", handed_off_at=T0))
    db.session.add_all(rows)
    db.session.flush()
    totals.bump(mailing.id, {"response:sent": n, "handed_off": n})
    db.session.commit()
    return mailing, rows


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_open_sets_opened_counts_and_appends_to_timeline(app):
    mailing, (r, *_) = make_mailing()
    result = apply_event(r.id, kind="open", source="tracking", occurred_at=at(5))
    assert result.applied and result.response is Response.OPENED
    apply_event(r.id, kind="open", source="tracking", occurred_at=at(6))
    row = db.session.get(Recipient, r.id)
    assert (row.response, row.opens, row.machine_opens) == ("opened", 2, 0)
    c = totals.get(mailing.id)
    assert c["opens"] == 2 and c["opened_unique"] == 1 and c["opened_unique_human"] == 1
    assert c["response:opened"] == 1 and c["response:sent"] == 2
    assert c["delivered_unique"] == 1
    assert c["opens@2026-11-23T10"] == 2
    events = responses.timeline(r.id)
    assert [(e.kind, e.applied) for e in events] == [("open", True), ("open", False)]


def test_machine_open_counts_apart_and_only_proves_delivery(app):
    mailing, (r, *_) = make_mailing()
    apply_event(r.id, kind="open", source="tracking", occurred_at=at(0.01), machine=True)
    row = db.session.get(Recipient, r.id)
    assert (row.response, row.opens, row.machine_opens) == ("delivered", 1, 1)
    c = totals.get(mailing.id)
    assert c["opens_machine"] == 1 and c["opened_unique"] == 1
    assert c.get("opened_unique_human", 0) == 0
    apply_event(r.id, kind="open", source="tracking", occurred_at=at(30))
    assert totals.get(mailing.id)["opened_unique_human"] == 1
    assert totals.get(mailing.id)["opened_unique"] == 1


def test_clicks_grow_after_final_response(app):
    mailing, (r, *_) = make_mailing()
    apply_event(r.id, kind="unsubscribed", source="tracking", occurred_at=at(1))
    result = apply_event(r.id, kind="click", source="tracking", occurred_at=at(2))
    assert not result.applied
    row = db.session.get(Recipient, r.id)
    assert row.response == "unsubscribed" and row.clicks == 1
    c = totals.get(mailing.id)
    assert c["clicks"] == 1 and c["clicked_unique"] == 1 and c["unsubscribed"] == 1


def test_repeated_provider_event_is_ignored(app):
    mailing, (r, *_) = make_mailing()
    first = apply_event(r.id, kind="open", source="sendgrid", occurred_at=at(1),
                        provider_event_id="ev1")
    again = apply_event(r.id, kind="open", source="sendgrid", occurred_at=at(1),
                        provider_event_id="ev1")
    assert first.applied and again.duplicate and not again.applied
    # The same id from another source is another event.
    apply_event(r.id, kind="open", source="mailgun", occurred_at=at(1), provider_event_id="ev1")
    assert db.session.get(Recipient, r.id).opens == 2
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 2
    assert totals.get(mailing.id)["opens"] == 2


def test_duplicate_inside_one_batch_is_ignored(app):
    _, (r, *_) = make_mailing()
    ev = Event(kind="click", source="sendgrid", occurred_at=at(1), recipient_id=r.id,
               provider_event_id="x")
    result = apply_events([ev, ev])
    assert result.summary() == {"received": 2, "applied": 1, "duplicates": 1, "unmatched": 0}


def test_events_out_of_order_end_in_the_same_response(app):
    mailing, (a, b, _) = make_mailing()
    in_order = [("delivered", 1), ("open", 2), ("click", 3)]
    for kind, minute in in_order:
        apply_event(a.id, kind=kind, source="x", occurred_at=at(minute))
    for kind, minute in reversed(in_order):
        apply_event(b.id, kind=kind, source="x", occurred_at=at(minute))
    assert db.session.get(Recipient, a.id).response == "clicked"
    assert db.session.get(Recipient, b.id).response == "clicked"
    c = totals.get(mailing.id)
    assert c["response:clicked"] == 2 and c.get("response:delivered", 0) == 0
    assert c["response:opened"] == 0 and c["delivered_unique"] == 2


def test_batch_sorts_each_recipients_events_by_time(app):
    _, (r, *_) = make_mailing()
    # Delivered then hard bounce then open: in time order the bounce applies, the open cannot.
    apply_events([
        Event(kind="open", source="x", occurred_at=at(9), recipient_id=r.id),
        Event(kind="hard_bounce", source="x", occurred_at=at(5), recipient_id=r.id),
        Event(kind="delivered", source="x", occurred_at=at(1), recipient_id=r.id),
    ])
    assert db.session.get(Recipient, r.id).response == "hard_bounce"


def test_hard_bounce_marks_contact_and_counts(app):
    mailing, (r, *_) = make_mailing()
    apply_event(r.id, kind="hard_bounce", source="dsn", occurred_at=at(1),
                detail={"status": "5.1.1", "diagnostic": "550 5.1.1 user unknown"})
    row = db.session.get(Recipient, r.id)
    contact = db.session.get(Contact, row.contact_id)
    assert row.response == "hard_bounce" and "user unknown" in row.detail
    assert contact.do_not_email and contact.do_not_email_reason == "hard bounce"
    assert not contact.valid
    assert totals.get(mailing.id)["hard_bounces"] == 1


def test_hard_bounce_after_open_is_kept_in_timeline_only(app):
    _, (r, *_) = make_mailing()
    apply_event(r.id, kind="open", source="tracking", occurred_at=at(1))
    result = apply_event(r.id, kind="hard_bounce", source="dsn", occurred_at=at(2))
    assert not result.applied
    contact = db.session.get(Contact, r.contact_id)
    assert contact.valid and not contact.do_not_email
    assert [e.kind for e in responses.timeline(r.id)] == ["open", "hard_bounce"]


def test_complaint_reaches_contact_even_when_response_is_final(app):
    mailing, (r, *_) = make_mailing()
    apply_event(r.id, kind="unsubscribed", source="tracking", occurred_at=at(1))
    apply_event(r.id, kind="spam", source="sendgrid", occurred_at=at(2))
    contact = db.session.get(Contact, r.contact_id)
    assert contact.do_not_email and contact.do_not_email_reason == "spam complaint"
    assert db.session.get(Recipient, r.id).response == "unsubscribed"


def test_unsubscribe_from_one_type_and_resubscribe(app):
    mailing, (r, *_) = make_mailing(email_type=True)
    apply_event(r.id, kind="unsubscribed", source="tracking", occurred_at=at(1),
                detail={"scope": "type"})
    contact = db.session.get(Contact, r.contact_id)
    assert not contact.do_not_email
    assert responses.email_types_left(contact.id) == {mailing.email_type_id}
    apply_event(r.id, kind="resubscribed", source="tracking", occurred_at=at(2),
                detail={"scope": "type"})
    assert responses.email_types_left(contact.id) == set()
    assert db.session.get(Recipient, r.id).response == "unsubscribed"


def test_resubscribe_all_lifts_only_an_unsubscribe(app):
    _, (a, b, _) = make_mailing()
    apply_event(a.id, kind="unsubscribed", source="tracking", occurred_at=at(1))
    apply_event(b.id, kind="spam", source="sendgrid", occurred_at=at(1))
    for r in (a, b):
        apply_event(r.id, kind="resubscribed", source="tracking", occurred_at=at(2))
    assert not db.session.get(Contact, a.contact_id).do_not_email
    assert db.session.get(Contact, b.contact_id).do_not_email


def test_unsubscribe_without_type_leaves_all(app):
    _, (r, *_) = make_mailing()
    apply_event(r.id, kind="unsubscribed", source="tracking", occurred_at=at(1),
                detail={"scope": "type"})
    contact = db.session.get(Contact, r.contact_id)
    assert contact.do_not_email and contact.do_not_email_reason == "unsubscribed"
    assert db.session.scalar(select(func.count()).select_from(TypeOptOut)) == 0


def test_crash_unknown_is_replaced_and_flag_cleared(app):
    mailing, (r, other, _) = make_mailing()
    for row, crash in ((r, True), (other, False)):
        row = db.session.get(Recipient, row.id)
        row.response, row.crash_unknown = "unknown", crash
    totals.bump(mailing.id, {"response:sent": -2, "response:unknown": 2})
    db.session.commit()
    assert apply_event(r.id, kind="delivered", source="x", occurred_at=at(1)).applied
    assert not apply_event(other.id, kind="delivered", source="x", occurred_at=at(1)).applied
    row = db.session.get(Recipient, r.id)
    assert row.response == "delivered" and not row.crash_unknown
    assert totals.get(mailing.id)["response:unknown"] == 1


def test_message_id_finds_the_recipient(app):
    _, (r, *_) = make_mailing()
    result = apply_events([Event(kind="delivered", source="ses", occurred_at=at(1),
                                 message_id=f"<{r.message_id}>")])
    assert result.applied == 1 and db.session.get(Recipient, r.id).response == "delivered"
    missing = apply_events([Event(kind="delivered", source="ses", occurred_at=at(1),
                                  message_id="<nobody@elsewhere>")])
    assert missing.unmatched == 1


def test_counters_match_responses_after_a_mixed_batch(app):
    mailing, rows = make_mailing(50)
    kinds = ["delivered", "open", "click", "soft_bounce", "hard_bounce", "blocked", "dropped",
             "spam", "unsubscribed", "deferred"]
    events = [Event(kind=kinds[(i * 7 + j) % len(kinds)], source="gen", occurred_at=at(i + j),
                    recipient_id=r.id, provider_event_id=f"{i}-{j}")
              for i, r in enumerate(rows) for j in range(4)]
    apply_events(events)
    c = totals.get(mailing.id)
    actual = dict(db.session.execute(
        select(Recipient.response, func.count()).where(Recipient.mailing_id == mailing.id)
        .group_by(Recipient.response)).all())
    for resp in Response:
        assert c.get(totals.response_key(resp), 0) == actual.get(resp.value, 0), resp
    assert c["opens"] == db.session.scalar(select(func.sum(Recipient.opens)))
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 200


def test_invalid_event_writes_nothing(app):
    _, (r, *_) = make_mailing()
    good = Event(kind="open", source="x", occurred_at=at(1), recipient_id=r.id)
    with pytest.raises(EventError):
        apply_events([good, Event(kind="planned", source="x", occurred_at=at(1),
                                  recipient_id=r.id)])
    with pytest.raises(EventError):
        apply_events([Event(kind="open", source="x", occurred_at=datetime(2026, 1, 1),
                            recipient_id=r.id)])
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 0


def test_activity_reads_hourly_buckets(app):
    mailing, (r, *_) = make_mailing()
    for minutes in (1, 2, 61, 185):
        apply_event(r.id, kind="open", source="tracking", occurred_at=at(minutes))
    apply_event(r.id, kind="click", source="tracking", occurred_at=at(3))
    hours = responses.activity(mailing.id)
    assert [(h.hour, n) for h, n in hours] == [(10, 2), (11, 1), (13, 1)]
    assert [(h.hour, n) for h, n in responses.activity(mailing.id, "click")] == [(10, 1)]


def test_race_on_provider_event_id_is_survived(app, monkeypatch):
    _, (r, *_) = make_mailing()
    apply_event(r.id, kind="open", source="sendgrid", occurred_at=at(1), provider_event_id="e")
    db.session.commit()  # the other request's batch
    calls = []
    real = responses._existing_provider_ids

    def blind_first_time(events):
        # The first look misses the row, as if the other request committed just after it.
        calls.append(1)
        return set() if len(calls) == 1 else real(events)

    monkeypatch.setattr(responses, "_existing_provider_ids", blind_first_time)
    result = apply_event(r.id, kind="open", source="sendgrid", occurred_at=at(1),
                         provider_event_id="e")
    assert result.duplicate and len(calls) == 2
    assert db.session.get(Recipient, r.id).opens == 1


def test_timeline_rows_read_back_exactly_as_given(app):
    """Times in any zone, with microseconds, and details come back unchanged through the models;
    the hourly counter is kept under the UTC hour."""
    _, (r, *_) = make_mailing()
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 23, 11, 59, 58, 123456, tzinfo=paris)  # 10:59:58 UTC
    apply_events([
        Event(kind="soft_bounce", source="dsn", occurred_at=moment, recipient_id=r.id,
              provider_event_id="q1", detail={"status": "4.2.2", "diagnostic": "mailbox full"}),
        Event(kind="open", source="tracking", occurred_at=moment + timedelta(seconds=3),
              recipient_id=r.id),
    ])
    first, second = responses.timeline(r.id)
    assert first.occurred_at == moment and first.occurred_at.tzinfo is not None
    assert (first.kind, first.source, first.provider_event_id, first.applied) == (
        "soft_bounce", "dsn", "q1", True)
    assert first.detail == {"status": "4.2.2", "diagnostic": "mailbox full"}
    assert second.detail is None and second.occurred_at == moment + timedelta(seconds=3)
    assert first.received_at == second.received_at
    assert abs(first.received_at - datetime.now(UTC)) < timedelta(minutes=1)
    recipient = db.session.get(Recipient, r.id)
    assert recipient.response == "opened"  # the open proves the soft bounce was passing
    assert recipient.response_at == moment + timedelta(seconds=3)
    assert totals.get(r.mailing_id)["opens@2026-11-23T11"] == 1  # 11:00:01 UTC


def test_a_batch_naming_thousands_of_recipients(app):
    """6,000 events for 3,000 recipients, half named by Message-ID, in one batch (the lookups pass
    them as one parameter): every recipient is found, every event lands, a repeat inside the
    batch and a whole batch sent again are recognised."""
    mailing = Mailing(name="Large", status="sent")
    db.session.add(mailing)
    db.session.flush()
    db.session.add_all(Recipient(mailing_id=mailing.id, address=f"x{i}@example.org",
                                 response="sent", message_id=f"x{i}.q@sendboard.local",
                                 handed_off_at=T0) for i in range(3000))
    db.session.flush()
    totals.bump(mailing.id, {"response:sent": 3000})
    db.session.commit()
    ids = list(db.session.scalars(select(Recipient.id).where(Recipient.mailing_id == mailing.id)
                                  .order_by(Recipient.id)))
    events = []
    for i, rid in enumerate(ids):
        named = ({"recipient_id": rid} if i % 2 else
                 {"message_id": f"<x{i}.q@sendboard.local>"})
        events.append(Event(kind="delivered", source="gen", occurred_at=at(1),
                            provider_event_id=f"d{i}", **named))
        events.append(Event(kind="open", source="gen", occurred_at=at(2),
                            provider_event_id=f"o{i}", **named))
    events.append(Event(kind="open", source="gen", occurred_at=at(3), recipient_id=ids[0],
                        provider_event_id="o0"))
    result = apply_events(events)
    assert (result.received, result.applied, result.duplicates, result.unmatched) == (
        6001, 6000, 1, 0)
    c = totals.get(mailing.id)
    assert c["response:opened"] == 3000 and c["response:sent"] == 0 and c["opens"] == 3000
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 6000
    again = apply_events(events[:4000])
    assert again.duplicates == 4000 and again.applied == 0

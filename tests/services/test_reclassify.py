"""Reading stored hard bounces again: responses, counters, timeline and contacts corrected together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, ResponseEvent
from app.services import totals
from app.services.reclassify import reclassify
from app.services.responses import apply_event

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BLOCKLIST = "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org"
USER_UNKNOWN = "550 5.1.1 <x@example.org>: Recipient address rejected: User unknown"
FULL = "552 5.2.2 Mailbox full"


def mailing_for(contacts: list[Contact], name: str) -> list[Recipient]:
    mailing = Mailing(name=name, status="sent")
    db.session.add(mailing)
    db.session.flush()
    rows = [Recipient(mailing_id=mailing.id, contact_id=c.id, address=c.email,
                      response=Response.SENT.value, message_id=f"{name}.{c.id}@sendboard.local",
                      handed_off_at=T0) for c in contacts]
    db.session.add_all(rows)
    db.session.flush()
    totals.bump(mailing.id, {"response:sent": len(rows), "handed_off": len(rows)})
    db.session.commit()
    return rows


def hard(recipient: Recipient, diagnostic: str, status: str, minutes: int = 1) -> None:
    """A hard bounce as an older classifier recorded it from bounce mail."""
    result = apply_event(recipient.id, kind="hard_bounce", source="dsn",
                         occurred_at=T0 + timedelta(minutes=minutes),
                         detail={"status": status, "diagnostic": diagnostic})
    assert result.applied


def refused_at_hand_off(recipient: Recipient, reply: str) -> None:
    """A hand-off refusal taken for a hard bounce, as the sender records it."""
    row = db.session.get(Recipient, recipient.id)
    row.response, row.detail = Response.HARD_BOUNCE.value, reply
    contact = db.session.get(Contact, recipient.contact_id)
    contact.valid, contact.invalid_reason = False, "hard bounce at hand-off"
    contact.do_not_email, contact.do_not_email_reason = True, "hard bounce"
    totals.move(recipient.mailing_id, Response.SENT, Response.HARD_BOUNCE)
    totals.bump(recipient.mailing_id, {"hard_bounces": 1})
    db.session.commit()


def counters_match_rows(mailing_id: int) -> None:
    counts = dict(db.session.execute(
        select(Recipient.response, func.count()).where(Recipient.mailing_id == mailing_id)
        .group_by(Recipient.response)).all())
    c = totals.get(mailing_id)
    for response in (Response.SENT, Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.BLOCKED,
                     Response.UNSUBSCRIBED):
        assert c.get(totals.response_key(response), 0) == counts.get(response.value, 0), response
    assert c.get("hard_bounces", 0) == counts.get("hard_bounce", 0)
    assert c.get("soft_bounces", 0) == counts.get("soft_bounce", 0)
    assert c.get("blocked", 0) == counts.get("blocked", 0)


def flags(contact_id: int) -> tuple[bool, str, bool, str]:
    c = db.session.get(Contact, contact_id)
    db.session.refresh(c)
    return c.valid, c.invalid_reason, c.do_not_email, c.do_not_email_reason


def test_reclassify_shows_then_corrects_and_restores_contacts(app):
    contacts = [Contact(email=f"p{i}@example.org", email_key=f"p{i}@example.org")
                for i in range(5)]
    db.session.add_all(contacts)
    db.session.commit()
    p0, p1, p2, p3, p4 = contacts
    first = mailing_for(contacts, "first")
    second = mailing_for([p2, p4], "second")
    # p2 unsubscribed from the second mailing, then a first-mailing "hard bounce" arrived.
    apply_event(second[0].id, kind="unsubscribed", source="tracking", occurred_at=T0)
    hard(first[0], BLOCKLIST, "5.7.1")  # a block list: not the address
    hard(first[1], USER_UNKNOWN, "5.1.1")  # really unknown: stays
    hard(first[2], FULL, "5.2.2")  # mailbox full, and the contact had unsubscribed
    refused_at_hand_off(first[3], "550 5.7.1 Message rejected as spam by Content Filtering")
    hard(first[4], BLOCKLIST, "5.7.1")
    hard(second[1], USER_UNKNOWN, "5.1.1", minutes=2)  # p4 is still hard elsewhere
    assert flags(p0.id) == (False, "hard bounce", True, "hard bounce")

    shown = reclassify()
    assert shown.checked == 6 and not shown.applied
    assert sorted((c.recipient_id, c.new, c.contact_restored) for c in shown.changes) == [
        (first[0].id, Response.BLOCKED, True),
        (first[2].id, Response.SOFT_BOUNCE, True),
        (first[3].id, Response.BLOCKED, True),
        (first[4].id, Response.BLOCKED, False),
    ]
    assert shown.contacts_restored == 3
    by_id = {c.recipient_id: c for c in shown.changes}
    assert by_id[first[2].id].kept == ["unsubscribed"]
    assert by_id[first[4].id].kept == ["another hard bounce"]
    assert by_id[first[3].id].evidence == "hand-off"
    # Showing writes nothing.
    assert db.session.get(Recipient, first[0].id).response == "hard_bounce"
    assert flags(p0.id) == (False, "hard bounce", True, "hard bounce")

    done = reclassify(apply=True)
    assert done.applied and len(done.changes) == 4
    responses = {r.id: db.session.get(Recipient, r.id).response for r in first + second}
    assert [responses[r.id] for r in first] == [
        "blocked", "hard_bounce", "soft_bounce", "blocked", "blocked"]
    assert db.session.get(Recipient, first[0].id).reason == "blocked"
    assert flags(p0.id) == (True, "", False, "")
    assert flags(p1.id) == (False, "hard bounce", True, "hard bounce")
    assert flags(p2.id) == (True, "", True, "unsubscribed")
    assert flags(p3.id) == (True, "", False, "")
    assert flags(p4.id) == (False, "hard bounce", True, "hard bounce")
    for mailing_id in {first[0].mailing_id, second[0].mailing_id}:
        counters_match_rows(mailing_id)

    entry = db.session.execute(select(ResponseEvent).where(
        ResponseEvent.recipient_id == first[0].id, ResponseEvent.kind == "reclassified")
    ).scalar_one()
    assert entry.source == "reclassify"
    assert entry.detail["from"] == "hard_bounce" and entry.detail["to"] == "blocked"
    assert entry.detail["reason"] == "blocked" and entry.detail["permanent"] is False
    assert entry.detail["contact_restored"] is True
    kept = db.session.execute(select(ResponseEvent).where(
        ResponseEvent.recipient_id == first[4].id, ResponseEvent.kind == "reclassified")
    ).scalar_one()
    assert kept.detail["contact_kept_because"] == "another hard bounce"

    # Nothing left to correct.
    again = reclassify(apply=True)
    assert again.checked == 2 and again.changes == []


def test_cli_lists_then_applies(app):
    contact = Contact(email="cli@example.org", email_key="cli@example.org")
    db.session.add(contact)
    db.session.commit()
    (row,) = mailing_for([contact], "cli")
    hard(row, BLOCKLIST, "5.7.1")
    runner = app.test_cli_runner()
    shown = runner.invoke(args=["bounces", "reclassify"])
    assert shown.exit_code == 0, shown.output
    assert f"recipient {row.id} <cli@example.org>" in shown.output
    assert "hard_bounce -> blocked (blocked, 5.7.1); contact would be restored" in shown.output
    assert "1 hard bounces checked; 1 to correct (run with --apply); 1 contacts to restore" \
        in shown.output
    assert db.session.get(Recipient, row.id).response == "hard_bounce"
    applied = runner.invoke(args=["bounces", "reclassify", "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "1 corrected" in applied.output
    db.session.expire_all()
    assert db.session.get(Recipient, row.id).response == "blocked"
    assert flags(contact.id) == (True, "", False, "")

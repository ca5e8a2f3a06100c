"""Response jobs: the 48-hour rule, soft-bounce invalidation, bounce Maildir and IMAP reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Provider, Recipient, ResponseEvent
from app.runtime.capture import MaildirWriter
from app.services import bounces, totals
from app.services.responses import Event, apply_events
from app.services.tokens import recipient_token
from jobs import periodic
from jobs.responses import process_bounces, time_rules

NOW = datetime.now(UTC)


def make(n: int = 2, *, handed_off_at: datetime, contacts: list[Contact] | None = None,
         name: str = "M") -> list[Recipient]:
    mailing = Mailing(name=name, status="sent", started_at=handed_off_at)
    db.session.add(mailing)
    db.session.flush()
    rows = []
    for i in range(n):
        contact = contacts[i] if contacts else Contact(email=f"{name}{i}@example.org",
                                                       email_key=f"{name}{i}@example.org")
        db.session.add(contact)
        db.session.flush()
        rows.append(Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                              response=Response.SENT.value, handed_off_at=handed_off_at,
                              message_id=f"r{name}{i}.x@sendboard.local"))
    db.session.add_all(rows)
    totals.bump(mailing.id, {"response:sent": n})
    db.session.commit()
    return rows


def test_silence_becomes_delivered_without_a_reporting_provider(app):
    old = make(2, handed_off_at=NOW - timedelta(hours=49), name="old")
    young = make(1, handed_off_at=NOW - timedelta(hours=47), name="young")
    result = time_rules()
    assert result["recipients"] == 2
    assert {db.session.get(Recipient, r.id).response for r in old} == {"delivered"}
    assert db.session.get(Recipient, young[0].id).response == "sent"
    c = totals.get(old[0].mailing_id)
    assert c["response:delivered"] == 2 and c["response:sent"] == 0 and c["delivered_unique"] == 2
    events = db.session.scalars(select(ResponseEvent)).all()
    assert {(e.kind, e.source, e.applied) for e in events} == {("delivered", "time_rule", True)}
    assert time_rules()["recipients"] == 0  # nothing twice


def test_silence_becomes_unknown_with_a_reporting_provider(app):
    db.session.add(Provider(name="ESP", kind="smtp", reports_events=True, is_default=True))
    rows = make(1, handed_off_at=NOW - timedelta(days=3))
    time_rules()
    row = db.session.get(Recipient, rows[0].id)
    assert row.response == "unknown" and not row.crash_unknown
    assert totals.get(row.mailing_id)["response:unknown"] == 1


def test_soft_bounces_in_three_mailings_make_the_contact_invalid(app):
    people = [Contact(email="a@example.org", email_key="a@example.org"),
              Contact(email="b@example.org", email_key="b@example.org")]
    for i in range(3):
        rows = make(2, handed_off_at=NOW, contacts=people, name=f"m{i}")
        rows[0].response = Response.SOFT_BOUNCE.value
        if i < 2:
            rows[1].response = Response.SOFT_BOUNCE.value
    db.session.commit()
    assert time_rules()["invalid_contacts"] == 1
    a, b = (db.session.get(Contact, p.id) for p in people)
    assert not a.valid and a.soft_bounce_mailings == 3 and "3 mailings" in a.invalid_reason
    assert b.valid


@pytest.mark.parametrize(("reason", "invalid"), [
    ("mailbox_full", True),
    ("expired", True),
    ("filtered", False),  # a spam filter refused the content
    ("blocked", False),  # our sending IP is block-listed
    ("sender", False),  # SPF/DKIM/DMARC of our own domain
    ("policy", False),
    ("rate_limited", False),
])
def test_only_soft_bounces_about_the_mailbox_count_toward_invalid(app, reason, invalid):
    person = Contact(email="c@example.org", email_key="c@example.org")
    for i in range(3):
        (row,) = make(1, handed_off_at=NOW, contacts=[person], name=f"s{i}")
        result = apply_events([Event(kind="soft_bounce", source="dsn", occurred_at=NOW,
                                     recipient_id=row.id,
                                     detail={"reason": reason, "status": "4.0.0"})])
        assert result.applied == 1
        assert db.session.get(Recipient, row.id).reason == reason
    time_rules()
    contact = db.session.get(Contact, person.id)
    assert contact.valid is (not invalid)
    assert not contact.do_not_email  # a soft bounce never makes a contact do-not-email


DSN = """\
From: MAILER-DAEMON@mx.example.net
To: {to}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; x@example.org
Action: failed
Status: {status}
Diagnostic-Code: smtp; 550 {status} gone

--B
Content-Type: text/rfc822-headers

Message-ID: <{mid}>

--B--
"""


def test_process_bounces_reads_the_capture_maildir(app):
    a, b = make(2, handed_off_at=NOW - timedelta(minutes=5))
    writer = MaildirWriter(Path(app.config["INSTANCE_DIR"]) / "bounces")
    # One found by the VERP envelope recipient, one by the original Message-ID, one stranger.
    verp = f"bounce+{recipient_token(a.id)}@bounces.sendboard.local"
    writer.store(DSN.format(to="x@y", status="5.1.1", mid="other@x").encode(), "", [verp])
    writer.store(DSN.format(to="x@y", status="4.2.2", mid=b.message_id).encode(), "",
                 ["bounce@bounces.sendboard.local"])
    writer.store(b"From: someone\nSubject: hi\n\nhello\n", "a@b", ["x@bounces.sendboard.local"])
    writer.close()
    counts = process_bounces()
    assert counts["messages"] == 3 and counts["applied"] == 2 and counts["ignored"] == 1
    assert db.session.get(Recipient, a.id).response == "hard_bounce"
    assert db.session.get(Recipient, b.id).response == "soft_bounce"
    assert not db.session.get(Contact, a.contact_id).valid
    maildir = Path(app.config["INSTANCE_DIR"]) / "bounces"
    assert not list((maildir / "new").iterdir()) and len(list((maildir / "cur").iterdir())) == 3
    assert process_bounces().get("messages", 0) == 0


def test_the_same_bounce_twice_counts_once(app):
    (a,) = make(1, handed_off_at=NOW)
    raw = DSN.format(to=f"bounce+{recipient_token(a.id)}@b", status="5.1.1", mid="m@x").encode()
    for _ in range(2):
        apply_events([bounces.to_event(raw).event])
    assert totals.get(a.mailing_id)["hard_bounces"] == 1
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 1


class FakeImap:
    """Just enough of imaplib.IMAP4 for the poller: UID SEARCH, FETCH and STORE."""

    def __init__(self, messages: dict[bytes, bytes]) -> None:
        self.messages = messages
        self.seen: set[bytes] = set()
        self.logged_in = self.logged_out = False

    def login(self, user, password):
        self.logged_in = (user, password) == ("bounces", "pw")
        return "OK", [b"logged in"]

    def select(self, folder):
        return ("OK", [b"3"]) if folder == "Bounces" else ("NO", [b"no such folder"])

    def uid(self, command, *args):
        if command == "SEARCH":
            return "OK", [b" ".join(u for u in self.messages if u not in self.seen)]
        if command == "FETCH":
            uid = args[0]
            return "OK", [(b"1 (UID " + uid + b" BODY[] {n}", self.messages[uid]), b")"]
        if command == "STORE":
            self.seen.update(args[0].split(b","))
            return "OK", []
        raise AssertionError(command)

    def logout(self):
        self.logged_out = True


def test_imap_poller_applies_unseen_and_flags_them(app):
    (a,) = make(1, handed_off_at=NOW)
    fake = FakeImap({
        b"7": DSN.format(to=f"bounce+{recipient_token(a.id)}@b", status="5.7.1",
                         mid="m@x").replace("gone", "blocked by spamhaus").encode(),
        b"9": b"Subject: not a bounce\n\nhello",
    })
    settings = {"host": "imap.example", "port": 993, "user": "bounces", "password": "pw",
                "folder": "Bounces"}
    counts = bounces.poll_imap(settings, connect=lambda s: fake)
    assert fake.logged_in and fake.logged_out and fake.seen == {b"7", b"9"}
    assert counts == {"applied": 1, "duplicates": 0, "unmatched": 0, "events": 1,
                      "ignored": 1, "messages": 2}
    assert db.session.get(Recipient, a.id).response == "blocked"
    assert bounces.poll_imap(settings, connect=lambda s: fake).get("messages", 0) == 0


def test_periodic_entries_and_a_real_worker_run(app, redis_conn):
    names = {p.func: p.every for p in periodic.PERIODIC}
    assert names["jobs.responses.time_rules"] == 300
    assert names["jobs.responses.process_bounces"] == 30
    make(1, handed_off_at=NOW - timedelta(days=3))
    job = Queue("default", connection=redis_conn).enqueue("jobs.responses.time_rules")
    SimpleWorker(["default"], connection=redis_conn).work(burst=True)
    assert job.return_value() == {"recipients": 1, "mailings": 1, "invalid_contacts": 0}


def test_the_mailto_unsubscribe_of_a_message_is_honoured(app):
    """Every message offers <mailto:bounce+TOKEN@...?subject=unsubscribe> in List-Unsubscribe;
    a mail client that uses it sends us exactly that, and the contact leaves."""
    a, b = make(2, handed_off_at=NOW - timedelta(hours=1))
    writer = MaildirWriter(Path(app.config["INSTANCE_DIR"]) / "bounces")
    verp = f"bounce+{recipient_token(a.id)}@bounces.sendboard.local"
    writer.store(f"From: {a.address}\r\nTo: {verp}\r\nSubject: unsubscribe\r\n\r\n".encode(),
                 a.address, [verp])
    # A forged token in the address, and a reply with another subject, change nothing.
    forged = "bounce+MQ.forged@bounces.sendboard.local"
    writer.store(f"From: {b.address}\r\nTo: {forged}\r\nSubject: Unsubscribe\r\n\r\n".encode(),
                 b.address, [forged])
    other = f"bounce+{recipient_token(b.id)}@bounces.sendboard.local"
    writer.store(f"From: {b.address}\r\nTo: {other}\r\nSubject: Thanks!\r\n\r\nhi\r\n".encode(),
                 b.address, [other])
    writer.close()
    counts = process_bounces()
    assert counts["messages"] == 3 and counts["applied"] == 1 and counts["ignored"] == 2
    assert db.session.get(Recipient, a.id).response == "unsubscribed"
    contact = db.session.get(Contact, a.contact_id)
    assert contact.do_not_email and contact.do_not_email_reason == "unsubscribed"
    assert db.session.get(Recipient, b.id).response == "sent"
    assert not db.session.get(Contact, b.contact_id).do_not_email
    [event] = db.session.scalars(select(ResponseEvent)).all()
    assert (event.kind, event.source, event.detail) == (
        "unsubscribed", "mailto", {"scope": "all", "via": "mailto"})

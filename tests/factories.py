"""Test data and test servers shared by the test modules: audiences, mailings, report-ready
mailings, counts read back, a real SMTP server and an RQ worker run to completion.

Every builder commits what it made, as a view or a job would after its service call returned:
the worker, the browser's server thread and a rolled-back request all see it.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from rq import SimpleWorker
from sqlalchemy import func, select

from app.domain import figures
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import (
    Contact,
    ContactList,
    EmailType,
    ListMember,
    Mailing,
    Recipient,
    TypeOptOut,
    User,
)
from app.redis_conn import QUEUE_NAMES
from app.services import mailings, sending, totals
from app.services.ledger import Ledger
from app.services.responses import apply_event
from tests.smtp_server import SmtpServer

HTML = (
    '<html><body><p>Hello {{ name }}</p><a href="https://example.org/offer?a=1&amp;b=2">Offer</a>'
    ' <a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>'
)
TEXT = "Hello {{ name }}\nUnsubscribe: {{ unsubscribe_url }}\n"


# ---------------------------------------------------------------- servers


@pytest.fixture
def smtp(app: Flask) -> Iterator[SmtpServer]:
    """A real SMTP server, the app's relay for the test; the engine's connections start afresh."""
    server = SmtpServer().start()
    app.config["CAPTURE_SMTP_PORT"] = server.port
    app.config["SMTP_HOST"] = ""
    _fresh_connections()
    yield server
    _fresh_connections()
    server.stop()


def _fresh_connections() -> None:
    close = getattr(sending, "close_connections", None)
    if close is not None:
        close()
    else:
        sending._transports.clear()


def run_worker(redis_conn: Any) -> None:
    """Run every queued sending and default job, then return."""
    SimpleWorker(["sending", "default"], connection=redis_conn).work(burst=True)


def run_every_queue(redis_conn: Any) -> None:
    """Run every queued job of every queue a worker serves, in its order, then return."""
    SimpleWorker(list(QUEUE_NAMES), connection=redis_conn).work(burst=True)


# ---------------------------------------------------------------- data


def make_audience(n: int, *, list_name: str = "Customers", start: int = 0) -> ContactList:
    """A list of `n` contacts userI@example.org (I from `start`), all with a recent purchase."""
    lst = ContactList(name=list_name)
    db.session.add(lst)
    db.session.flush()
    now = datetime.now(UTC)
    for i in range(start, start + n):
        c = Contact(email=f"user{i}@example.org", email_key=f"user{i}@example.org",
                    name=f"User {i}", last_transaction_at=now)
        db.session.add(c)
        db.session.flush()
        db.session.add(ListMember(list_id=lst.id, contact_id=c.id))
    db.session.commit()
    return lst


def make_mailing(lists: list[ContactList], **values: Any) -> Mailing:
    """A draft to `lists` with HTML and text bodies, owned by a new user; `values` override."""
    owner = User(email="owner@example.org", password_hash="x")
    db.session.add(owner)
    db.session.commit()
    fields: dict[str, Any] = dict(subject="Hi {{ name }}", from_name="Shop",
                                  from_address="news@shop.example", html_body=HTML,
                                  text_body=TEXT)
    fields.update(values)
    mailing = mailings.create(owner_id=owner.id, name="Autumn", list_ids=[x.id for x in lists],
                              **fields)
    db.session.commit()
    return mailing


def build_reported(responses: list[Response], *, status: Status = Status.SENT, name: str = "M",
                   one_off: bool = False) -> Mailing:
    """A mailing whose recipients have the given responses, with counters to match (Opened and
    Clicked recipients carry one human open, Clicked ones one human click)."""
    mailing = Mailing(name=name, status=status.value, one_off=one_off,
                      started_at=datetime.now(UTC) - timedelta(minutes=10))
    db.session.add(mailing)
    db.session.flush()
    for i, response in enumerate(responses):
        engaged = response in (Response.OPENED, Response.CLICKED)
        db.session.add(Recipient(mailing_id=mailing.id, address=f"p{i:04d}@example.org",
                                 response=response.value, opens=int(engaged),
                                 clicks=int(response is Response.CLICKED)))
    counts = Counter(r.value for r in responses)
    deltas = {totals.response_key(r): n for r, n in counts.items()}
    openers = counts[Response.OPENED.value] + counts[Response.CLICKED.value]
    deltas.update(opens=openers, opened_unique=openers, opened_unique_human=openers,
                  clicks=counts[Response.CLICKED.value],
                  clicked_unique=counts[Response.CLICKED.value],
                  clicked_unique_human=counts[Response.CLICKED.value])
    totals.bump(mailing.id, deltas)
    db.session.commit()
    return mailing


def make_sent_recipients(n: int, *, handed_off_at: datetime | None = None) -> list[Recipient]:
    """A sent mailing with `n` recipients pN@example.org, each with its contact, the response
    Sent, a message id rN.ab@sendboard.local and a hand-off an hour ago (or at `handed_off_at`);
    its Sent counter matches. What a provider's webhook reports on."""
    handed_off_at = handed_off_at or datetime.now(UTC) - timedelta(hours=1)
    mailing = Mailing(name="Autumn", status=Status.SENT.value)
    db.session.add(mailing)
    db.session.flush()
    out = []
    for i in range(n):
        contact = Contact(email=f"p{i}@example.org", email_key=f"p{i}@example.org")
        db.session.add(contact)
        db.session.flush()
        out.append(Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                             response=Response.SENT.value, message_id=f"r{i}.ab@sendboard.local",
                             handed_off_at=handed_off_at))
    db.session.add_all(out)
    db.session.commit()
    totals.bump(mailing.id, {totals.response_key(Response.SENT): n})
    db.session.commit()
    return out


def response_of(recipient: Recipient) -> str:
    """The recipient's response as stored now (what another request wrote included)."""
    db.session.expire_all()
    return db.session.get_one(Recipient, recipient.id).response


def record_event(recipient_id: int, **values: Any) -> None:
    """A response event applied and committed, as the tracking and webhook views do."""
    apply_event(recipient_id, **values)
    db.session.commit()


# ---------------------------------------------------------------- every response at once

# A body whose merge field fails for a contact whose "n" is not a number: a Delivery error.
FIGURES_TEXT = "Hello {{ name }} {{ n + 1 if n is defined else 0 }}\nBye: {{ unsubscribe_url }}\n"


def _recipient_of(mailing_id: int, n: int) -> int:
    return db.session.execute(select(Recipient.id).where(
        Recipient.mailing_id == mailing_id, Recipient.address == f"user{n}@example.org",
        Recipient.response != Response.DUPLICATE.value)).scalar_one()


def build_every_response(app: Flask, redis_conn: Any, smtp: SmtpServer, monkeypatch: Any,
                         mid_send: Callable[[int], None]) -> int:
    """One mailing that reaches every response through the real services: preparation (each
    not-sent reason), the sender (accepted, refused for good, blocked, refused for now, a message
    that cannot be built, an address that left before hand-off), crash recovery, the send-until
    deadline, a cancel with a batch in flight and response events. `mid_send` is called while
    recipients are still Planned. Returns the mailing's id."""
    newsletter = EmailType(name="Newsletter")
    db.session.add(newsletter)
    first = make_audience(36, list_name="A")
    second = make_audience(0, list_name="B")
    c = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    db.session.add(ListMember(list_id=second.id, contact_id=c[0].id))  # Canceled (duplicate)
    c[1].do_not_email = True
    db.session.commit()
    db.session.add(TypeOptOut(contact_id=c[2].id, email_type_id=newsletter.id))
    c[3].valid = False
    c[4].last_transaction_at = datetime.now(UTC) - timedelta(days=800)
    c[4].created_at = datetime.now(UTC) - timedelta(days=900)
    c[8].fields = {"n": "not a number"}  # its message cannot be built: Delivery error
    smtp.handler.refuse["user6@example.org"] = "550 5.1.1 No such user"
    smtp.handler.refuse["user7@example.org"] = "554 5.7.1 Message refused as spam, blocked"
    # Refused for now: Deferred (waiting, not sent) until the deadline below stops it.
    smtp.handler.refuse["user10@example.org"] = "452 4.2.2 Mailbox full"
    db.session.commit()
    mailing = make_mailing([first, second], email_type_id=newsletter.id, html_body="",
                           text_body=FIGURES_TEXT)
    mailing_id = mailing.id
    mailings.send_now(mailing)
    from jobs.sending import prepare_mailing

    prepare_mailing(mailing_id)
    app.config["BATCH_SIZE"] = 10

    # A worker dies mid-batch: its one message in flight becomes Unknown, its 250 is Sent.
    dead = sending.claim_batch(redis_conn, worker="dead")
    assert dead is not None
    ledger = Ledger(redis_conn, dead.batch_id)
    r0, r5 = _recipient_of(mailing_id, 0), _recipient_of(mailing_id, 5)
    ledger.append(f"h:{r0}", f"s:{r0}:{int(time.time())}:m0@x", f"h:{r5}")
    redis_conn.delete(f"sb:alive:{dead.batch_id}")
    assert sending.settle_abandoned(redis_conn) == 1

    # user9 leaves between preparation and hand-off: not sent, checked again at hand-off.
    c[9].do_not_email = True
    db.session.commit()
    for _ in range(2):
        claim = sending.claim_batch(redis_conn, worker="w")
        assert claim is not None
        sending.send_claim(redis_conn, claim)
    mid_send(mailing_id)  # recipients still Planned: every figure must agree here too
    # A batch is in flight when the deadline passes and then staff cancel: the deadline stops
    # the unclaimed rest (Stopped (expired)), the cancel stops the batch (Canceled).
    app.config["BATCH_SIZE"] = 3
    held = sending.claim_batch(redis_conn, worker="w")
    assert held is not None
    db.session.execute(db.update(Mailing).where(Mailing.id == mailing_id)
                       .values(send_until=datetime.now(UTC) - timedelta(seconds=1)))
    db.session.commit()
    assert sending.claim_batch(redis_conn, worker="w") is None
    mailings.cancel(db.session.get(Mailing, mailing_id))
    sending.send_claim(redis_conn, held)

    now = datetime.now(UTC)

    def event(n: int, kind: str, machine: bool = False) -> None:
        apply_event(_recipient_of(mailing_id, n), kind=kind, source="tracking" if kind in (
            "open", "click") else "generic", occurred_at=now, machine=machine)

    event(11, "delivered")
    event(12, "open")
    event(13, "open")
    event(13, "open")
    event(14, "open", machine=True)  # a privacy proxy: delivered, not opened by a person
    event(15, "open")
    event(15, "click")
    event(16, "click")  # clicked with images off: a clicker who never opened
    event(17, "click", machine=True)  # a link scanner
    event(18, "soft_bounce")
    event(19, "hard_bounce")
    event(20, "blocked")
    event(21, "dropped")
    event(22, "open")
    event(22, "spam")  # opened, then complained: still one of the people who opened
    event(23, "click")
    event(23, "unsubscribed")
    event(24, "open", machine=True)
    event(24, "open")  # a machine open, then a person's
    return mailing_id


# ---------------------------------------------------------------- reading back


def responses_of(mailing: Mailing) -> Counter[str]:
    """How many of the mailing's recipients have each response, from the rows."""
    return rows_of(mailing.id)


def rows_of(mailing_id: int) -> Counter[str]:
    return Counter(dict(db.session.execute(
        select(Recipient.response, func.count()).where(Recipient.mailing_id == mailing_id)
        .group_by(Recipient.response)).all()))


def assert_counters_match_rows(mailing_id: int) -> None:
    """The mailing's response counters equal its recipients' responses, one by one."""
    db.session.expire_all()
    counters = totals.get(mailing_id)
    in_db = rows_of(mailing_id)
    for response in Response:
        assert counters.get(figures.response_counter(response), 0) == in_db[response.value], response


# ---------------------------------------------------------------- the mailing page read back


def _numbers(pattern: str, html: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, value in re.findall(pattern, html):
        number = int(value.replace(",", ""))
        assert found.setdefault(key, number) == number, (key, found[key], number)
    return found


def figures_of(html: str) -> dict[str, int]:
    return _numbers(r'data-figure="([\w-]+)">([\d,]+)<', html)


def tab_counts_of(html: str) -> dict[str, int]:
    return _numbers(r'id="tab-count-(\w+)"[^>]*>([\d,]+)<', html)


def reasons_of(html: str) -> dict[str, int]:
    return _numbers(r'data-reason="(\w+)">([\d,]+)<', html)


def bars_of(html: str) -> dict[str, int]:
    [raw] = re.findall(r'<script type="application/json" id="chart-figures">(.*?)</script>',
                       html, re.S)
    [bars] = json.loads(raw)["delivery"]["data"]
    return dict(zip(bars["y"], bars["x"], strict=True))

"""Test data and test servers shared by the test modules: audiences, mailings, report-ready
mailings, counts read back, a real SMTP server and an RQ worker run to completion.

Every builder commits what it made, as a view or a job would after its service call returned:
the worker, the browser's server thread and a rolled-back request all see it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
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
from app.models import Contact, ContactList, ListMember, Mailing, Recipient, User
from app.services import mailings, sending, totals
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

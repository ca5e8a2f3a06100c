"""Bad content stops a mailing rather than burning its audience: a few messages that cannot be
built are Delivery errors; past the limit the mailing is Interrupted with the error and the rest
waits, Planned, for a resume once the content or the data is fixed."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from app.domain.lifecycle import Status
from app.domain.thresholds import render_failures_stop
from app.extensions import db
from app.models import Contact
from app.services import mailings
from tests.factories import assert_counters_match_rows, make_audience, make_mailing, rows_of, run_worker

TEXT = "Hello {{ name }}: {{ n + 1 if n is defined else 0 }}\nUnsubscribe: {{ unsubscribe_url }}\n"


@pytest.mark.parametrize(("failed", "tried", "stop"), [
    (0, 0, False), (9, 9, False), (10, 10, True), (10, 1_000_000, True),
    (1, 99, False), (1, 100, False), (2, 100, True), (5, 1_000, False), (11, 1_000, True),
])
def test_render_failures_stop(failed: int, tried: int, stop: bool) -> None:
    assert render_failures_stop(failed=failed, tried=tried) is stop


def _break(contacts: list[Contact]) -> None:
    for c in contacts:
        c.fields = {"n": "not a number"}
    db.session.commit()


def test_a_few_messages_that_cannot_be_built_are_delivery_errors(app, redis_conn, smtp):  # noqa: F811
    lst = make_audience(30)
    _break(db.session.execute(select(Contact).order_by(Contact.id).limit(2)).scalars().all())
    mailing = make_mailing([lst], html_body="", text_body=TEXT)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert rows_of(mailing.id) == Counter({"sent": 28, "delivery_error": 2})
    assert_counters_match_rows(mailing.id)


def test_many_messages_that_cannot_be_built_interrupt_and_resume_sends_them(
        app, redis_conn, smtp):  # noqa: F811
    app.config["BATCH_SIZE"] = 8
    lst = make_audience(40)
    contacts = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    _break(contacts[5:20])
    mailing = make_mailing([lst], html_body="", text_body=TEXT)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert "10 messages could not be built" in mailing.status_reason
    assert "render failed" in mailing.status_reason
    in_db = rows_of(mailing.id)
    # Not the whole audience burnt: those of the last batch wait for a resume.
    assert in_db["delivery_error"] < 10 and in_db["planned"] >= 20
    assert_counters_match_rows(mailing.id)

    for c in contacts:
        c.fields = {"n": 1}
    db.session.commit()
    mailings.resume(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    final = rows_of(mailing.id)
    assert final["sent"] + final["delivery_error"] == 40 and final["sent"] >= 31
    assert_counters_match_rows(mailing.id)
    assert all(len(m) == 1 for m in smtp.by_recipient().values())


def test_content_that_cannot_be_built_for_any_sampled_recipient_is_refused(app, smtp):  # noqa: F811
    from app.services import render_check

    lst = make_audience(8)
    contacts = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    mailing = make_mailing([lst], html_body="", text_body=TEXT)
    assert render_check.problem(mailing) is None
    _break(contacts[:4])  # the first four sampled fail, the fifth builds: a few bad contacts
    assert render_check.problem(mailing) is None
    _break(contacts[:5])  # every sampled recipient fails: the content is refused
    found = render_check.problem(mailing)
    assert found is not None and "for user0@example.org" in found and "render failed" in found


def test_without_an_audience_a_preview_contact_is_built(app, smtp):  # noqa: F811
    from app.services import render_check

    mailing = make_mailing([make_audience(0)], html_body="",
                           text_body="{{ 1 / 0 }} {{ unsubscribe_url }}")
    found = render_check.problem(mailing)
    assert found is not None and "preview@example.org" in found


def test_send_now_and_schedule_refuse_content_that_cannot_be_built(app, smtp):  # noqa: F811
    from datetime import datetime, timedelta

    lst = make_audience(6)
    _break(db.session.execute(select(Contact).order_by(Contact.id)).scalars().all())
    mailing = make_mailing([lst], html_body="", text_body=TEXT)
    with pytest.raises(mailings.MailingError, match="cannot be built for user0@example.org"):
        mailings.send_now(mailing)
    with pytest.raises(mailings.MailingError, match="render failed"):
        mailings.schedule(mailing, datetime.now() + timedelta(days=2), "UTC")
    db.session.refresh(mailing)
    assert mailing.status == Status.DRAFT.value

"""Chain steps scheduled from their parent's finish (0 days: right after it), the unsubscribe-link
check for steps their parent starts, and resume refused while the cause of the interruption holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain import interruptions
from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Mailing, QuotaUsage, Recipient
from app.services import chains, mailings, settings
from tests.factories import HTML, TEXT, make_audience, make_mailing

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _sent_parent(finished: datetime) -> Mailing:
    parent = make_mailing([make_audience(2)])
    parent.status = Status.SENT.value
    parent.started_at = finished - timedelta(minutes=5)
    parent.finished_at = finished
    db.session.commit()
    return parent


def _step(parent: Mailing, days: int, now: datetime = NOW, **values: str) -> Mailing:
    content = {"subject": "Again", "from_address": "news@shop.example", "html_body": HTML,
               "text_body": TEXT, **values}
    step = chains.add_step(parent, name="Reminder", delay_days=days, condition="non_openers",
                           owner_id=None, now=now, **content)
    db.session.commit()
    return step


def test_step_added_to_a_sent_mailing_is_scheduled_from_its_finish(app):
    parent = _sent_parent(NOW - timedelta(days=1))
    step = _step(parent, 3)
    assert step.status == Status.SCHEDULED.value
    assert step.send_at == parent.finished_at + timedelta(days=3)
    plan = chains.plan(step, parent, NOW)
    assert plan is not None and not plan.due
    assert plan.text.startswith("Goes out 2026-12-02 12:00")


def test_step_whose_time_has_passed_waits_for_send_now(app):
    parent = _sent_parent(NOW - timedelta(days=5))
    step = _step(parent, 2)
    assert step.status == Status.DRAFT.value and step.send_at is None
    plan = chains.plan(step, parent, NOW)
    assert plan is not None and plan.due and "Send now" in plan.text
    assert "Due since 2026-11-27 12:00" in plan.text
    # Sending it now is the ordinary Send now, with its checks.
    assert mailings.send_problem(step) is None


def test_zero_days_is_right_after_the_parent(app):
    parent = make_mailing([make_audience(2)])
    step = _step(parent, 0)
    assert step.status == Status.DRAFT.value and step.chain_delay_days == 0
    assert chains.plan(step, parent, NOW).text.startswith("Goes out right after the parent")
    parent.status = Status.SENT.value
    parent.finished_at = NOW
    db.session.commit()
    chains.on_parent_sent(parent.id)
    db.session.refresh(step)
    assert step.status == Status.SCHEDULED.value and step.send_at == NOW


def test_step_delays_are_bounded(app):
    parent = make_mailing([make_audience(1)])
    for days in (-1, 366):
        with pytest.raises(mailings.MailingError, match="0 to 365 days"):
            chains.add_step(parent, name="x", delay_days=days, condition="all", owner_id=None)


def test_the_step_form_takes_zero_days(app, auth, client):
    auth.login()
    parent = make_mailing([make_audience(1)])
    answer = client.post(f"/mailings/{parent.id}/steps",
                         data={"name": "Right after", "delay_days": "0", "condition": "all"})
    assert answer.status_code == 302
    step = db.session.query(Mailing).filter_by(chain_parent_id=parent.id).one()
    assert step.chain_delay_days == 0 and step.name == "Right after"
    refused = client.post(f"/mailings/{parent.id}/steps",
                          data={"name": "Blank", "delay_days": "", "condition": "all"},
                          follow_redirects=True)
    assert "Enter a number of days" in refused.get_data(as_text=True)


def test_a_step_without_unsubscribe_link_is_not_started_by_its_parent(app):
    parent = make_mailing([make_audience(2)])
    step = _step(parent, 1, html_body="<p>No way out</p>", text_body="No way out")
    parent.status = Status.SENT.value
    parent.finished_at = NOW
    db.session.commit()
    chains.on_parent_sent(parent.id)
    db.session.refresh(step)
    assert step.status == Status.DRAFT.value and step.send_at is None
    assert step.status_reason.startswith("Not scheduled when Autumn finished: The HTML body and")
    assert "need an unsubscribe link" in step.status_reason
    plan = chains.plan(step, parent, NOW)
    assert plan is not None and "unsubscribe link" in plan.problem


def test_a_due_mailing_that_lost_its_link_goes_back_to_draft(app):
    parent = _sent_parent(NOW - timedelta(hours=1))
    step = _step(parent, 1)
    assert step.status == Status.SCHEDULED.value
    # Edited after it was scheduled: the link is gone.
    mailings.update_content(step, html_body="<p>Bye</p>", text_body="Bye")
    step.send_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    assert mailings.start_due() == []
    db.session.refresh(step)
    assert step.status == Status.DRAFT.value
    assert step.status_reason.startswith("Not sent at its scheduled time: The HTML body")


# ---------------------------------------------------------------- resume


def _interrupted(reason: str, planned: int = 3) -> Mailing:
    mailing = make_mailing([make_audience(planned)])
    mailing.status = Status.INTERRUPTED.value
    mailing.status_reason = reason
    mailing.started_at = mailing.interrupted_at = datetime.now(UTC)
    db.session.flush()
    for i in range(planned):
        db.session.add(Recipient(mailing_id=mailing.id, address=f"user{i}@example.org",
                                 response="planned"))
    db.session.add(Recipient(mailing_id=mailing.id, address="done@example.org", response="sent"))
    db.session.commit()
    return mailing


def _never(*_: object) -> str:
    raise AssertionError("the relay is not asked about an interruption it did not cause")


def test_resume_is_refused_while_the_monthly_quota_is_spent(app, redis_conn):
    settings.set("monthly_quota", 100)
    db.session.add(QuotaUsage(month=datetime.now(UTC).strftime("%Y-%m"), used=100))
    mailing = _interrupted("the monthly sending quota of 100 messages is used up")
    with pytest.raises(mailings.MailingError) as refused:
        mailings.resume(mailing, probe=_never)
    assert "quota of 100 messages is used up" in str(refused.value)
    assert "Raise it in Settings" in str(refused.value)
    db.session.rollback()
    assert db.session.get(Mailing, mailing.id).status == Status.INTERRUPTED.value
    # Raised: it resumes, and says how many remain.
    settings.set("monthly_quota", 1000)
    assert mailings.resume(db.session.get(Mailing, mailing.id), probe=_never) == 3
    assert db.session.get(Mailing, mailing.id).status == Status.SENDING.value


def test_resume_is_refused_while_the_relay_cannot_be_reached(app, redis_conn):
    mailing = _interrupted("cannot connect to 127.0.0.1:2525: [Errno 111] Connection refused")
    with pytest.raises(mailings.MailingError) as refused:
        mailings.resume(mailing, probe=lambda: "cannot connect to 127.0.0.1:2525: refused")
    assert "still cannot be reached: cannot connect to 127.0.0.1:2525" in str(refused.value)
    assert "Check the provider in Settings" in str(refused.value)
    db.session.rollback()
    mailing = db.session.get(Mailing, mailing.id)
    assert mailing.status == Status.INTERRUPTED.value
    assert mailings.resume(mailing, probe=lambda: None) == 3
    assert mailing.status == Status.SENDING.value


def test_relay_probe_tries_a_real_connection(app, redis_conn):
    from tests.smtp_server import SmtpServer

    server = SmtpServer().start()
    try:
        app.config.update(SMTP_HOST="", CAPTURE_SMTP_PORT=server.port)
        assert mailings.relay_problem() is None
    finally:
        server.stop()
    assert "cannot connect" in (mailings.relay_problem() or "")


def test_resume_after_another_cause_says_what_remains(app, redis_conn):
    mailing = _interrupted("bounce rate 12.0% passed the 10.0% limit after 200 messages", 5)
    check = mailings.resume_check(mailing, probe=_never)
    assert check.refusal is None and check.remaining == 5
    assert mailings.resume(mailing, probe=_never) == 5


def test_resume_through_the_page_shows_the_refusal_or_the_count(app, auth, client, redis_conn,
                                                                 monkeypatch):
    auth.login()
    monkeypatch.setattr(mailings, "relay_problem", lambda: "cannot connect to relay:25: down")
    mailing = _interrupted("relay:25 refused every message for now for 5 minutes", 4)
    page = client.post(f"/mailings/{mailing.id}/resume", follow_redirects=True)
    text = page.get_data(as_text=True)
    assert "Not resumed: The SMTP server still cannot be reached" in text
    monkeypatch.setattr(mailings, "relay_problem", lambda: None)
    page = client.post(f"/mailings/{mailing.id}/resume", data={"next": "home"},
                       follow_redirects=True)
    assert page.request.path == "/home"
    assert "4 recipients remain to be sent" in page.get_data(as_text=True)


@pytest.mark.parametrize("reason,cause", [
    ("the monthly sending quota of 5 messages is used up", interruptions.Cause.QUOTA),
    ("cannot connect to smtp.example:587: timed out", interruptions.Cause.RELAY),
    ("relay:25 refused every message for now for 5 minutes (last: 421 busy)",
     interruptions.Cause.RELAY),
    ("bounce rate 12.0% passed the 10.0% limit after 200 messages", interruptions.Cause.BOUNCES),
    ("complaint rate 1.00% passed the 0.50% limit after 200 messages",
     interruptions.Cause.COMPLAINTS),
    ("12 messages could not be built (last: x)", interruptions.Cause.CONTENT),
    ("paused", interruptions.Cause.OTHER),
])
def test_causes_are_read_from_the_reason(reason, cause):
    assert interruptions.cause_of(reason) is cause


def test_a_quota_starts_again_next_month():
    assert interruptions.next_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC)
    assert interruptions.resume_refusal(interruptions.Cause.OTHER, quota=None, quota_left=None,
                                        now=NOW, relay_problem="x") is None


def test_home_lists_interrupted_mailings_with_resume_for_staff_only(app, auth, client):
    from app.models import Contact

    mailing = _interrupted("bounce rate 12.0% passed the 10.0% limit after 200 messages", 3)
    blocked = db.session.query(Contact).filter_by(email="user0@example.org").one()
    blocked.do_not_email = True
    db.session.query(Contact).filter_by(email="user1@example.org").one().valid = False
    db.session.commit()
    auth.login()
    page = client.get("/home").get_data(as_text=True)
    assert 'id="home-interrupted"' in page and "Bounce rate too high" in page
    assert f'action="/mailings/{mailing.id}/resume"' in page
    # Every contact once, by the first rule that holds it back.
    assert 'data-testid="contacts-total">3<' in page
    assert 'data-testid="contacts-eligible">1<' in page
    assert 'data-testid="held-do_not_email">1<' in page
    assert 'data-testid="held-invalid_address">1<' in page
    listing = client.get("/mailings").get_data(as_text=True)
    assert 'id="interrupted"' in listing and "bounce rate 12.0% passed" in listing
    auth.logout()
    auth.login("viewer@example.org", role="viewer")
    page = client.get("/home").get_data(as_text=True)
    assert "Bounce rate too high" in page and "/resume" not in page


def test_a_step_added_to_a_sent_mailing_says_when_it_goes_out(app, auth, client):
    auth.login()
    parent = _sent_parent(datetime.now(UTC) - timedelta(hours=2))
    later = client.post(f"/mailings/{parent.id}/steps",
                        data={"name": "In two days", "delay_days": "2", "condition": "all"},
                        follow_redirects=True)
    step = db.session.query(Mailing).filter_by(name="In two days").one()
    assert step.status == Status.SCHEDULED.value
    assert step.send_at == parent.finished_at + timedelta(days=2)
    assert "Follow-up step added and scheduled. Goes out" in later.get_data(as_text=True)
    # 0 days after a mailing that finished two hours ago: due, sent once staff confirm.
    due = client.post(f"/mailings/{parent.id}/steps",
                      data={"name": "Right away", "delay_days": "0", "condition": "all"},
                      follow_redirects=True)
    step = db.session.query(Mailing).filter_by(name="Right away").one()
    assert step.status == Status.DRAFT.value
    assert due.request.path == f"/mailings/{step.id}"
    text = due.get_data(as_text=True)
    assert 'data-testid="step-plan"' in text and "use Send now to send it now" in text
    assert f'action="/mailings/{step.id}/send-now"' in text


def test_a_step_to_openers_counts_people_not_machines(app):
    from app.models import Contact
    from app.services import audience

    parent = _sent_parent(NOW - timedelta(days=1))
    people = db.session.query(Contact).order_by(Contact.id).all()
    for contact, (opens, machine) in zip(people, [(1, 0), (3, 3)], strict=True):
        db.session.add(Recipient(mailing_id=parent.id, contact_id=contact.id,
                                 address=contact.email, response="opened", opens=opens,
                                 machine_opens=machine, handed_off_at=NOW))
    db.session.commit()
    openers = _step(parent, 3)
    openers.chain_condition = "openers"
    non_openers = _step(parent, 3)
    assert audience.preview_counts(openers) == {"planned": 1}
    assert audience.preview_counts(non_openers) == {"planned": 1}
    materialised = {}
    for step in (openers, non_openers):
        audience.materialise(step)
        materialised[step.chain_condition] = {
            r.address for r in db.session.query(Recipient).filter_by(mailing_id=step.id)}
    assert materialised == {"openers": {"user0@example.org"},
                            "non_openers": {"user1@example.org"}}

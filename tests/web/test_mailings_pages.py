"""Mailings pages: list sections, polls that stop with 286, the mailing page and its actions,
its live charts, the editor, locks, CSV export, pagination, scheduling and the test send."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.domain.responses import LABELS, Response
from app.extensions import db
from app.models import Mailing, Recipient
from app.services import mailings, totals
from app.services.responses import apply_event
from tests.factories import build_reported as build
from tests.factories import make_audience, make_mailing, run_worker

PAGES = ["/mailings", "/mailings/_current", "/mailings/new", "/mailings/1", "/mailings/1/edit",
         "/mailings/1/_live", "/mailings/1/audience", "/mailings/1/audience.csv",
         "/mailings/1/preview", "/mailings/1/recipients/1", "/mailings/recipients/1/_message",
         "/mailings/schedule-check"]
POSTS = ["/mailings/1/cancel", "/mailings/1/resume", "/mailings/1/copy", "/mailings/1/delete",
         "/mailings/1/schedule", "/mailings/1/unschedule", "/mailings/1/send-now",
         "/mailings/1/test-send", "/mailings/1/steps", "/mailings/audience-count",
         "/mailings/one-off/1"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_require_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", POSTS)
def test_actions_require_login(client, path):
    response = client.post(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_empty_mailings_page_and_poll_that_stops(auth, client):
    auth.login()
    page = client.get("/mailings").get_data(as_text=True)
    assert "Nothing is sending right now." in page
    assert "No mailing is scheduled." in page and "Write your first mailing" in page
    assert 'hx-trigger="every 2s"' not in page
    poll = client.get("/mailings/_current")
    assert poll.status_code == 286
    assert "every 2s" not in poll.get_data(as_text=True)


def test_sections_queue_order_and_one_offs_left_out(app, auth, client):
    auth.login()
    now = datetime.now(UTC)
    second = build([Response.SENT] * 2 + [Response.PLANNED] * 2, status=Status.SENDING,
                   name="Second in queue")
    second.queued_at = now
    first = build([Response.PLANNED] * 3, status=Status.SENDING, name="First in queue")
    first.queued_at = now - timedelta(minutes=5)
    totals.bump(second.id, {"eligible": 4, "handed_off": 2})
    sched = build([], status=Status.DRAFT, name="Later")
    sched.status, sched.send_at, sched.send_at_zone = (Status.SCHEDULED.value,
                                                       now + timedelta(days=2), "Europe/Prague")
    build([Response.OPENED], name="Done and dusted")
    build([Response.SENT], name="One-off to ann", one_off=True)
    db.session.commit()

    page = client.get("/mailings").get_data(as_text=True)
    current = page[page.index('id="current"'):page.index('id="scheduled"')]
    assert current.index("First in queue") < current.index("Second in queue")
    assert 'hx-trigger="every 2s"' in current and "50.0 % sent" in current
    assert "Later" in page and "(Europe/Prague)" in page and "Cancel schedule" in page
    inactive = page[page.index('id="inactive"'):]
    assert "Done and dusted" in inactive
    assert "One-off to ann" not in page

    poll = client.get("/mailings/_current")
    assert poll.status_code == 200 and "every 2s" in poll.get_data(as_text=True)
    for m in (first, second):
        m.status = Status.SENT.value
    db.session.commit()
    poll = client.get("/mailings/_current")
    body = poll.get_data(as_text=True)
    assert poll.status_code == 286 and "every 2s" not in body
    # The finished mailings move to Inactive in the same swap.
    assert 'id="inactive" class="section" aria-labelledby="inactive-h" hx-swap-oob="true"' in body
    assert "First in queue" in body[body.index('id="inactive"'):]


def test_names_are_escaped(auth, client):
    auth.login()
    build([Response.SENT], name="<script>alert(1)</script>")
    page = client.get("/mailings").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page


def test_editor_creates_edits_and_counts_the_audience(app, auth, client):
    auth.login()
    lst = make_audience(4)
    from app.models import Contact

    db.session.execute(db.update(Contact).where(Contact.email == "user0@example.org")
                       .values(do_not_email=True))
    db.session.commit()
    count = client.post("/mailings/audience-count",
                        data={"lists": [str(lst.id)], "prevent_duplicates": "y"})
    body = count.get_data(as_text=True)
    assert re.search(r'data-testid="eligible">3<', body) and "Canceled (do not email)" in body
    assert db.session.execute(select(func.count()).select_from(Mailing)).scalar_one() == 0

    response = client.post("/mailings/new", data={
        "name": "Autumn sale", "subject": "Hi {{ name }}", "from_address": "news@shop.example",
        "from_name": "Shop", "lists": [str(lst.id)], "email_type_id": "0",
        "html_body": "<p>Hello {{ name }}</p>", "text_body": "Hello",
        "prevent_duplicates": "y", "utm_source": "newsletter",
    })
    assert response.status_code == 302
    mailing = db.session.execute(select(Mailing)).scalar_one()
    assert mailing.name == "Autumn sale" and mailing.utm_source == "newsletter"
    assert mailings.list_ids(mailing) == [lst.id]
    page = client.get(f"/mailings/{mailing.id}/edit").get_data(as_text=True)
    assert 'value="Autumn sale"' in page and "{{ unsubscribe_url }}" in page

    bad = client.post(f"/mailings/{mailing.id}/edit", data={
        "name": "Autumn sale", "subject": "{% if %}", "lists": [str(lst.id)], "email_type_id": "0"})
    assert "The template cannot be used" in bad.get_data(as_text=True)
    preview = client.get(f"/mailings/{mailing.id}/preview?contact=user1@example.org")
    assert "As user1@example.org will see it." in preview.get_data(as_text=True)
    assert "Hello User 1" in preview.get_data(as_text=True)


def test_send_watch_progress_then_polls_stop(app, auth, client, redis_conn, smtp):  # noqa: F811
    auth.login()
    mailing = make_mailing([make_audience(12)])
    response = client.post(f"/mailings/{mailing.id}/send-now")
    assert response.status_code == 302
    db.session.refresh(mailing)
    assert mailing.status == Status.PREPARING.value
    live = client.get(f"/mailings/{mailing.id}/_live")
    assert live.status_code == 200 and 'hx-trigger="every 2s"' in live.get_data(as_text=True)
    run_worker(redis_conn)
    live = client.get(f"/mailings/{mailing.id}/_live")
    body = live.get_data(as_text=True)
    # Sent: responses still arrive, so the page keeps refreshing, slowly, for a week.
    assert live.status_code == 200 and 'hx-trigger="every 30s"' in body
    assert "every 2s" not in body and "refreshed every 30 s" in body
    assert "100.0 % sent" in body and 'id="status-badge"' in body and "hx-swap-oob" in body
    mailing.finished_at = datetime.now(UTC) - timedelta(days=8)
    db.session.commit()
    live = client.get(f"/mailings/{mailing.id}/_live")
    body = live.get_data(as_text=True)
    assert live.status_code == 286 and "hx-trigger" not in body.split('id="live"')[1][:200]
    assert "100.0 % sent" in body
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert "Sent" in page and "delivery-chart" in page and "plotly-4.1.1.min.js" in page
    assert "cdn" not in page.lower()
    # Locked now: no edit button, the editor redirects, an edit post is refused.
    assert f"/mailings/{mailing.id}/edit" not in page
    assert client.get(f"/mailings/{mailing.id}/edit").status_code == 302
    refused = client.post(f"/mailings/{mailing.id}/edit", data={
        "name": "Changed", "email_type_id": "0"}, follow_redirects=True)
    assert "can no longer be edited" in refused.get_data(as_text=True)
    deleted = client.post(f"/mailings/{mailing.id}/delete", follow_redirects=True)
    assert "Only a draft can be deleted" in deleted.get_data(as_text=True)
    assert db.session.get(Mailing, mailing.id) is not None

    export = client.get(f"/mailings/{mailing.id}/audience.csv?tab=all")
    assert export.is_streamed and export.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    assert len(rows) == 13 and {r[3] for r in rows[1:]} == {"sent"}


def test_cancel_mid_send_lists_the_not_sent(app, auth, client, redis_conn):
    auth.login()
    mailing = make_mailing([make_audience(8)])
    mailing.status = Status.PREPARING.value
    db.session.commit()
    mailings.prepare(mailing.id)
    assert mailing.status == Status.SENDING.value
    response = client.post(f"/mailings/{mailing.id}/cancel", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "8 recipients were not sent" in page
    assert 'data-testid="not-sent-note"' in page and 'aria-current="page">Not sent' in page
    assert page.count("resp-canceled") == 8
    assert "canceled by staff" in page
    copy = client.post(f"/mailings/{mailing.id}/copy")
    clone = db.session.execute(select(Mailing).where(Mailing.copied_from_id == mailing.id)).scalar_one()
    assert copy.headers["Location"].endswith(f"/mailings/{clone.id}/edit")
    assert client.post(f"/mailings/{clone.id}/delete").status_code == 302
    assert db.session.get(Mailing, clone.id) is None


def test_audience_pages_via_links(app, auth, client):
    auth.login()
    mailing = build([Response.SENT] * 120)
    first = client.get(f"/mailings/{mailing.id}/audience?tab=all").get_data(as_text=True)
    assert first.count("resp-sent") == 50 and "Next ›" in first and "‹ Previous" not in first
    last_link = re.search(r'hx-get="([^"]*last=1[^"]*)"', first).group(1).replace("&amp;", "&")
    last = client.get(last_link).get_data(as_text=True)
    assert last.count("resp-sent") == 50 and "p0119@" in last and "Next ›" not in last
    prev_link = re.search(r'hx-get="([^"]*before=[^"]*)"', last).group(1).replace("&amp;", "&")
    middle = client.get(prev_link).get_data(as_text=True)
    assert middle.count("resp-sent") == 50 and "p0020@" in middle
    found = client.get(f"/mailings/{mailing.id}/audience?q=p0042").get_data(as_text=True)
    assert found.count("resp-sent") == 1 and "1 match." in found
    assert client.get(f"/mailings/{mailing.id}/audience.csv?tab=nope").status_code == 404


def last_sunday(year: int, month: int) -> str:
    """The EU clock change day: the last Sunday of March or October."""
    day = datetime(year, month, 31)
    return (day - timedelta(days=(day.weekday() + 1) % 7)).strftime("%Y-%m-%d")


def test_schedule_refuses_a_gap_notes_ambiguity_and_unschedules(app, auth, client):
    auth.login()
    mailing = make_mailing([make_audience(1)])
    year = datetime.now(UTC).year + 1
    spring, autumn = last_sunday(year, 3), last_sunday(year, 10)
    gap = client.post(f"/mailings/{mailing.id}/schedule", data={
        "local_time": f"{spring}T02:30", "zone": "Europe/Prague"}, follow_redirects=True)
    assert "does not exist in Europe/Prague" in gap.get_data(as_text=True)
    db.session.refresh(mailing)
    assert mailing.status == Status.DRAFT.value
    check = client.get(f"/mailings/schedule-check?local_time={autumn}T02:30&zone=Europe/Prague")
    assert "happens twice" in check.get_data(as_text=True)
    twice = client.post(f"/mailings/{mailing.id}/schedule", data={
        "local_time": f"{autumn}T02:30", "zone": "Europe/Prague"}, follow_redirects=True)
    body = twice.get_data(as_text=True)
    assert "Scheduled for" in body and "happens twice" in body
    db.session.refresh(mailing)
    assert mailing.status == Status.SCHEDULED.value and mailing.send_at_zone == "Europe/Prague"
    listed = client.get("/mailings").get_data(as_text=True)
    assert f"{autumn} 02:30 CEST (Europe/Prague)" in listed
    client.post(f"/mailings/{mailing.id}/unschedule")
    db.session.refresh(mailing)
    assert mailing.status == Status.DRAFT.value


def test_follow_up_step_is_listed_on_the_parent(app, auth, client):
    auth.login()
    parent = make_mailing([make_audience(2)])
    response = client.post(f"/mailings/{parent.id}/steps", data={
        "name": "Reminder", "delay_days": "3", "condition": "non_openers"})
    step = db.session.execute(select(Mailing).where(Mailing.chain_parent_id == parent.id)).scalar_one()
    assert response.headers["Location"].endswith(f"/mailings/{step.id}/edit")
    assert step.chain_delay_days == 3 and step.chain_condition == "non_openers"
    page = client.get(f"/mailings/{parent.id}").get_data(as_text=True)
    assert "Reminder" in page and "non-openers" in page


def test_test_send_goes_through_smtp_without_recipients(app, auth, client, smtp):  # noqa: F811
    auth.login()
    mailing = make_mailing([make_audience(2)])
    response = client.post(f"/mailings/{mailing.id}/test-send", follow_redirects=True)
    assert "Test message sent to staff@example.org" in response.get_data(as_text=True)
    [message] = smtp.handler.messages
    assert message.rcpt == ["staff@example.org"] and b"Subject: [Test] Hi" in message.data
    assert db.session.execute(select(func.count()).select_from(Recipient)).scalar_one() == 0


def test_test_send_reports_an_unreachable_server(app, auth, client):
    from tests.smtp_server import free_port

    auth.login()
    app.config["CAPTURE_SMTP_PORT"] = free_port()
    mailing = make_mailing([make_audience(1)])
    response = client.post(f"/mailings/{mailing.id}/test-send", follow_redirects=True)
    assert "Test not sent" in response.get_data(as_text=True)


def chart_figures(html: str) -> dict:
    """The chart figures a page or poll carries for the charts to be drawn from."""
    found = re.findall(r'<script type="application/json" id="chart-figures">(.*?)</script>',
                       html, re.S)
    assert len(found) == 1, html
    return json.loads(found[0])


def plotted(figure: dict) -> dict[str, int]:
    """The delivery chart's bars: response label -> recipients."""
    [bars] = figure["data"]
    return dict(zip(bars["y"], bars["x"], strict=True))


def hand_off(mailing: Mailing, count: int) -> list[int]:
    """What the sender does for `count` Planned recipients: Sent to provider, counters moved."""
    ids = list(db.session.execute(
        select(Recipient.id).where(Recipient.mailing_id == mailing.id,
                                   Recipient.response == Response.PLANNED.value)
        .order_by(Recipient.id).limit(count)).scalars())
    db.session.execute(db.update(Recipient).where(Recipient.id.in_(ids))
                       .values(response=Response.SENT.value))
    totals.move(mailing.id, Response.PLANNED, Response.SENT, len(ids))
    totals.bump(mailing.id, {"handed_off": len(ids)})
    return ids


def test_poll_brings_the_charts_as_the_counters_change(app, auth, client):
    auth.login()
    mailing = build([Response.PLANNED] * 5, status=Status.SENDING, name="Live charts")
    totals.bump(mailing.id, {"recipients": 5, "eligible": 5})
    db.session.commit()
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert "plotly-4.1.1.min.js" in page and "js/mailing-charts.js" in page
    # Both chart areas are on the page; the activity one waits hidden for its first figure.
    assert 'id="delivery-chart" role="img" aria-label="Recipients per response">' in page
    assert 'id="activity-chart" role="img" aria-label="Opens and clicks per hour" hidden>' in page
    assert plotted(chart_figures(page)["delivery"]) == {"Planned": 5}

    first = client.get(f"/mailings/{mailing.id}/_live")
    body = first.get_data(as_text=True)
    assert first.status_code == 200 and 'hx-trigger="every 2s"' in body
    figures = chart_figures(body)
    assert plotted(figures["delivery"]) == {"Planned": 5} and figures["activity"] is None
    # The poll carries data only: nothing a swap would run, so no listener is ever added twice.
    assert re.findall(r"<script[^>]*>", body) == [
        '<script type="application/json" id="chart-figures">']

    sent = hand_off(mailing, 3)
    db.session.commit()
    apply_event(sent[0], kind="open", source="tracking", occurred_at=datetime.now(UTC))
    figures = chart_figures(client.get(f"/mailings/{mailing.id}/_live").get_data(as_text=True))
    assert plotted(figures["delivery"]) == {
        "Planned": 2, LABELS[Response.SENT]: 2, LABELS[Response.OPENED]: 1}
    opens, clicks = figures["activity"]["data"]
    assert opens["name"] == "Opens" and sum(opens["y"]) == 1 and len(opens["x"]) == 1
    assert clicks["y"] == []

    # The send finishes between two polls: the next poll carries the final figures and slows
    # down; a week later the last one (286) still carries them.
    hand_off(mailing, 2)
    mailing.status = Status.SENT.value
    mailing.finished_at = datetime.now(UTC)
    db.session.commit()
    slow = client.get(f"/mailings/{mailing.id}/_live")
    assert slow.status_code == 200 and 'hx-trigger="every 30s"' in slow.get_data(as_text=True)
    assert plotted(chart_figures(slow.get_data(as_text=True))["delivery"]) == {
        LABELS[Response.SENT]: 4, LABELS[Response.OPENED]: 1}
    mailing.finished_at = datetime.now(UTC) - timedelta(days=7, seconds=1)
    db.session.commit()
    last = client.get(f"/mailings/{mailing.id}/_live")
    body = last.get_data(as_text=True)
    assert last.status_code == 286 and "every 2s" not in body and "every 30s" not in body
    figures = chart_figures(body)
    assert plotted(figures["delivery"]) == {LABELS[Response.SENT]: 4, LABELS[Response.OPENED]: 1}
    assert sum(figures["activity"]["data"][0]["y"]) == 1


def test_charts_wait_on_a_page_opened_before_any_recipient(app, auth, client):
    auth.login()
    mailing = build([], status=Status.PREPARING, name="Just started")
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert '<section class="card charts" id="charts" aria-label="Charts" hidden>' in page
    assert "js/mailing-charts.js" in page
    assert chart_figures(page) == {"delivery": None, "activity": None}
    poll = client.get(f"/mailings/{mailing.id}/_live").get_data(as_text=True)
    assert chart_figures(poll) == {"delivery": None, "activity": None}
    # A draft has nothing to chart and nothing coming: no chart area, no plotly download.
    draft = build([], status=Status.DRAFT, name="Draft")
    page = client.get(f"/mailings/{draft.id}").get_data(as_text=True)
    assert 'id="charts"' not in page and "plotly" not in page and "chart-figures" not in page


def test_chart_figures_cannot_end_their_script_element(app, auth, client, monkeypatch):
    from app import charts

    title = "</script><script>alert(1)</script><!-- & -->"

    def delivery(responses):
        return {"data": [], "layout": {"title": {"text": title}}}

    monkeypatch.setattr(charts, "delivery_figure_dict", delivery)
    auth.login()
    mailing = build([Response.PLANNED], status=Status.SENDING)
    totals.bump(mailing.id, {"recipients": 1})
    db.session.commit()
    for path in (f"/mailings/{mailing.id}", f"/mailings/{mailing.id}/_live"):
        body = client.get(path).get_data(as_text=True)
        assert "alert(1)</script>" not in body and "<!--" not in body
        assert chart_figures(body)["delivery"]["layout"]["title"]["text"] == title


def test_a_draft_states_no_eligibility_facts(app, auth, client):
    auth.login()
    draft = make_mailing([make_audience(3)])
    page = client.get(f"/mailings/{draft.id}").get_data(as_text=True)
    assert "Every recipient was eligible" not in page
    assert "decided when the mailing is prepared" in page
    assert 'hx-trigger="every' not in page  # nothing can change by itself


def test_cancel_with_a_batch_in_flight_settles_on_the_page(app, auth, client, redis_conn,
                                                         smtp):  # noqa: F811
    from app.services import sending
    from app.services.ledger import Ledger

    auth.login()
    app.config["BATCH_SIZE"] = 4
    mailing = make_mailing([make_audience(10)])
    mailing.status = Status.PREPARING.value
    db.session.commit()
    mailings.prepare(mailing.id)
    # A sender holds a batch and has had two of its messages accepted so far.
    claim = sending.claim_batch(redis_conn, worker="w")
    ids = list(db.session.execute(select(Recipient.id).where(
        Recipient.batch_id == claim.batch_id).order_by(Recipient.id)).scalars())
    Ledger(redis_conn, claim.batch_id).append(
        f"h:{ids[0]}", f"s:{ids[0]}:1:m0@x", f"h:{ids[1]}", f"s:{ids[1]}:1:m1@x", f"h:{ids[2]}")
    poll = client.get(f"/mailings/{mailing.id}/_live").get_data(as_text=True)
    # % sent moves with each message, not with each recorded batch.
    assert "20.0 % sent" in poll and 'data-figure="progress-sent">2<' in poll

    response = client.post(f"/mailings/{mailing.id}/cancel", follow_redirects=True)
    page = response.get_data(as_text=True)
    # No wrong number: the page says the batch is being recorded, and keeps refreshing fast.
    assert "its last messages are being recorded" in page
    assert "were not sent" not in page and 'data-testid="settling"' in page
    poll = client.get(f"/mailings/{mailing.id}/_live")
    assert poll.status_code == 200 and 'hx-trigger="every 2s"' in poll.get_data(as_text=True)

    # The sender stops at the cancel and records its batch: the next poll brings the truth.
    Ledger(redis_conn, claim.batch_id).close()
    sending.send_claim(redis_conn, claim)
    poll = client.get(f"/mailings/{mailing.id}/_live")
    body = poll.get_data(as_text=True)
    db.session.expire_all()
    by_response = dict(db.session.execute(
        select(Recipient.response, func.count()).where(Recipient.mailing_id == mailing.id)
        .group_by(Recipient.response)).all())
    assert by_response == {"canceled": 10}  # the stopped sender had not recorded its 250s
    assert poll.status_code == 200 and 'hx-trigger="every 30s"' in body
    assert 'data-testid="settling"' not in body
    assert "0 sent; 10 recipients were not sent" in body
    assert 'id="tab-count-not_sent" class="count" hx-swap-oob="true">10<' in body
    assert 'id="tab-count-all" class="count" hx-swap-oob="true">10<' in body


def test_audience_tab_counts_travel_with_the_poll(app, auth, client):
    auth.login()
    mailing = build([], status=Status.PREPARING, name="Starting")
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert 'id="tab-count-all" class="count">0<' in page
    assert "once the mailing is prepared" in page and 'data-tab="all" data-shown-count="0"' in page
    db.session.add_all([Recipient(mailing_id=mailing.id, address=f"a{i}@example.org")
                        for i in range(3)])
    totals.bump(mailing.id, {totals.response_key(Response.PLANNED): 3, "recipients": 3,
                             "eligible": 3})
    mailing.status = Status.SENDING.value
    db.session.commit()
    poll = client.get(f"/mailings/{mailing.id}/_live").get_data(as_text=True)
    assert 'id="tab-count-all" class="count" hx-swap-oob="true">3<' in poll
    assert 'id="tab-count-not_sent" class="count" hx-swap-oob="true">0<' in poll


def test_duration_leaves_out_the_time_spent_interrupted(app, auth, client, redis_conn):
    from app.services import sending

    auth.login()
    mailing = build([Response.PLANNED] * 2, status=Status.SENDING, name="Paused")
    mailing.started_at = datetime.now(UTC) - timedelta(hours=5)
    db.session.commit()
    # A cause that no longer holds (a relay failure would first be checked by a connection).
    sending.interrupt(mailing.id, "bounce rate passed the limit")
    db.session.expire_all()
    mailing = db.session.get(Mailing, mailing.id)
    assert mailing.interrupted_at is not None
    # It sat Interrupted for 3 hours before staff resumed it.
    mailing.interrupted_at = datetime.now(UTC) - timedelta(hours=3)
    db.session.commit()
    mailings.resume(mailing)
    assert mailing.interrupted_at is None and 3 * 3600 <= mailing.interrupted_seconds < 3 * 3600 + 5
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert re.search(r'data-testid="duration">2 h 00 min<', page), page

"""Dashboard read models: totals from counters, progress, keyset pages, CSV, contact history."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from app import charts
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, ResponseEvent
from app.services import reports, totals
from tests.factories import build_reported as build


def ids_of(mailing: Mailing, wanted: set[Response] | None = None, tab: str = "all") -> list[int]:
    rows = db.session.query(Recipient).filter_by(mailing_id=mailing.id)
    only = {"open": lambda r: r.opens > r.machine_opens,
            "click": lambda r: r.clicks > r.machine_clicks}.get(tab, lambda r: True)
    return sorted(r.id for r in rows
                  if (wanted is None or Response(r.response) in wanted) and only(r))


MIXED = [Response.SENT, Response.OPENED, Response.CLICKED, Response.CANCELED,
         Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.DUPLICATE, Response.SPAM] * 13


@pytest.mark.parametrize("tab", list(reports.TABS))
def test_keyset_pages_walk_every_tab_forward_and_backward(app, tab):
    mailing = build(MIXED)
    wanted = set(reports.TABS[tab][1])
    expected = ids_of(mailing, wanted, tab)
    assert len(expected) == reports.tab_counts(totals.get(mailing.id))[tab]
    counters = totals.get(mailing.id)
    size = 7

    seen, page = [], reports.audience_page(mailing.id, tab, size=size, counters=counters)
    assert page.first
    while True:
        seen += [r.id for r in page.rows]
        if page.last:
            break
        page = reports.audience_page(mailing.id, tab, after=page.next_after, size=size,
                                     counters=counters)
    assert seen == expected

    back, page = [], reports.audience_page(mailing.id, tab, last=True, size=size,
                                           counters=counters)
    assert page.last
    assert [r.id for r in page.rows] == expected[-size:] if expected else page.rows == []
    while True:
        back = [r.id for r in page.rows] + back
        if page.first:
            break
        page = reports.audience_page(mailing.id, tab, before=page.prev_before, size=size,
                                     counters=counters)
    assert back == expected


def test_pages_do_not_mix_mailings_and_tab_counts_come_from_counters(app):
    build([Response.SENT] * 5, name="Other")
    mailing = build(MIXED)
    page = reports.audience_page(mailing.id, "all", size=500)
    assert len(page.rows) == len(MIXED) and page.first and page.last
    counts = reports.tab_counts(totals.get(mailing.id))
    assert counts["all"] == len(MIXED)
    assert counts["open"] == 26 and counts["click"] == 13 and counts["bounce"] == 26
    assert counts["not_sent"] == 26 and counts["spam"] == 13


def test_search_by_address_prefix(app):
    mailing = build(MIXED)
    page = reports.audience_page(mailing.id, "all", q="p001")
    assert [r.address for r in page.rows] == [f"p{i:04d}@example.org" for i in range(10, 20)]
    page = reports.audience_page(mailing.id, "not_sent", q="P00")  # case falls back to lower
    assert {r.response for r in page.rows} <= {"canceled", "duplicate"} and page.rows


def test_email_totals_and_rates():
    t = reports.email_totals({
        "handed_off": 200, "eligible": 250, "opened_unique": 50, "opened_unique_human": 40,
        "clicked_unique": 10, "clicked_unique_human": 8, "opens": 90, "opens_machine": 30,
        "clicks": 12, "response:sent": 160, "response:blocked": 2, "response:spam": 1,
        "response:hard_bounce": 37, "response:planned": 47, "response:canceled": 3,
        "response:duplicate": 2, "response:unknown": 1, "blocked": 5, "complaints": 9,
    })
    assert t.sent == 201 and t.not_sent == 5 and t.waiting == 47 and t.audience == 253
    assert t.open_rate == pytest.approx(40 / 201) and t.click_rate == pytest.approx(8 / 201)
    assert t.opens_human == 60 and t.openers_machine_only == 10 and t.clickers_machine_only == 2
    # Current responses, not the cumulative counters the sender keeps for its thresholds.
    assert t.blocked_or_spam == 3 and t.hard_bounces == 37
    assert t.not_sent_by_reason == {Response.DUPLICATE: 2, Response.CANCELED: 3}
    assert t.sent_problems == {Response.HARD_BOUNCE: 37, Response.BLOCKED: 2,
                               Response.UNKNOWN: 1}
    assert reports.email_totals({}).open_rate == 0.0


def test_time_left_follows_the_recent_pace(app, redis_conn):
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    mailing = Mailing(name="x", status=Status.SENDING.value, started_at=now - timedelta(minutes=10))
    db.session.add(mailing)
    db.session.commit()
    t = reports.email_totals({"eligible": 300, "response:sent": 100, "response:planned": 200})
    # One reading gives no pace: no time left rather than a guess.
    assert reports.sending_progress(mailing, t, now).time_left is None
    # 10 recipients in 5 s: 2/s, 190 left -> 95 s.
    t2 = reports.email_totals({"eligible": 300, "response:sent": 110, "response:planned": 190})
    progress = reports.sending_progress(mailing, t2, now + timedelta(seconds=5))
    assert progress.time_left == timedelta(seconds=95)
    assert reports.human_duration(progress.time_left) == "1 min 35 s"
    assert reports.human_duration(None) == "—"
    # A minute later with no progress: the pace is gone, and so is the estimate.
    assert reports.sending_progress(mailing, t2, now + timedelta(seconds=70)).time_left is None
    mailing.status = Status.SENT.value
    assert reports.sending_progress(mailing, t2, now).time_left is None


def test_duration_leaves_out_time_spent_interrupted():
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    mailing = Mailing(name="x", status=Status.INTERRUPTED.value, started_at=start,
                      interrupted_at=start + timedelta(minutes=5), interrupted_seconds=0)
    t = reports.email_totals({})
    later = start + timedelta(hours=3)
    assert reports.sending_progress(mailing, t, later).duration == timedelta(minutes=5)
    mailing.status, mailing.interrupted_at = Status.SENT.value, None
    mailing.interrupted_seconds = 3600
    mailing.finished_at = start + timedelta(hours=2)
    assert reports.sending_progress(mailing, t, later).duration == timedelta(hours=1)


def test_csv_streams_every_row_of_a_tab_and_defuses_formulas(app, monkeypatch):
    monkeypatch.setattr(reports, "CSV_CHUNK", 4)
    mailing = build(MIXED)
    first = db.session.query(Recipient).filter_by(mailing_id=mailing.id).order_by(Recipient.id).first()
    first.detail = "=HYPERLINK(1)"
    db.session.commit()
    chunks = list(reports.audience_csv(mailing.id, "all", totals.get(mailing.id)))
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert rows[0] == list(reports.CSV_HEADER)
    assert [int(r[0]) for r in rows[1:]] == ids_of(mailing)
    assert rows[1][-1] == "'=HYPERLINK(1)"
    bounce = list(csv.reader(io.StringIO("".join(reports.audience_csv(mailing.id, "bounce")))))
    assert {r[3] for r in bounce[1:]} == {"hard_bounce", "soft_bounce"} and len(bounce) == 27


def test_bounces_show_their_reason_in_words_on_the_page_and_in_the_csv(app, client, auth):
    from app.services.responses import apply_event

    mailing = build([Response.SENT, Response.SENT])
    full, blocked = db.session.query(Recipient).filter_by(mailing_id=mailing.id).order_by(
        Recipient.id).all()
    now = datetime.now(UTC)
    apply_event(full.id, kind="soft_bounce", source="dsn", occurred_at=now,
                detail={"reason": "mailbox_full", "status": "4.2.2",
                        "diagnostic": "452 4.2.2 over quota"})
    apply_event(blocked.id, kind="blocked", source="dsn", occurred_at=now,
                detail={"reason": "blocked", "status": "5.7.1",
                        "diagnostic": "554 5.7.1 listed at a block list"})
    rows = list(csv.reader(io.StringIO("".join(reports.audience_csv(mailing.id, "all")))))
    reason_at = list(reports.CSV_HEADER).index("reason")
    by_id = {int(r[0]): r for r in rows[1:]}
    assert by_id[full.id][reason_at] == "mailbox full"
    assert by_id[blocked.id][reason_at] == "blocked or block-listed"
    auth.login()
    html = client.get(f"/mailings/{mailing.id}/audience?tab=bounce").get_data(as_text=True)
    assert "<strong>mailbox full</strong>: 452 4.2.2 over quota" in html
    html = client.get(f"/mailings/{mailing.id}/audience?tab=spam").get_data(as_text=True)
    assert "<strong>blocked or block-listed</strong>" in html


def test_contact_history_lists_mailings_with_their_timeline(app):
    contact = Contact(email="ann@example.org", email_key="ann@example.org")
    db.session.add(contact)
    mailing = build([], name="Spring")
    db.session.flush()
    sent_at = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
    rec = Recipient(mailing_id=mailing.id, contact_id=contact.id, address="ann@example.org",
                    response=Response.OPENED.value, opens=2, handed_off_at=sent_at)
    db.session.add(rec)
    db.session.flush()
    db.session.add(ResponseEvent(recipient_id=rec.id, mailing_id=mailing.id, kind="open",
                                 source="tracking", occurred_at=sent_at + timedelta(hours=1),
                                 applied=True))
    db.session.commit()
    [entry] = reports.contact_history(contact.id)
    assert entry.mailing_name == "Spring" and entry.response_label == "Opened"
    assert [i.label for i in entry.timeline] == ["Handed off to the provider", "Opened"]
    assert entry.last_change == sent_at + timedelta(hours=1)


def test_charts_are_pure_functions_of_totals():
    fig = charts.delivery_figure({Response.SENT: 5, Response.OPENED: 2, Response.CANCELED: 0})
    assert list(fig.data[0].y) == ["Sent to provider", "Opened"]
    assert list(fig.data[0].x) == [5, 2]
    t0 = datetime(2030, 1, 1, 9, tzinfo=UTC)
    activity = charts.activity_figure([(t0, 3)], [(t0, 1)])
    assert [tr.name for tr in activity.data] == ["Opens", "Clicks"]
    # Every point in one hour: still hour ticks over a range of hours, never sub-second ones.
    axis = charts.activity_figure_dict([(t0, 3)], [(t0, 1)])["layout"]["xaxis"]
    assert axis["dtick"] == charts.HOUR_MS and axis["range"] == ["2030-01-01 08:00",
                                                                 "2030-01-01 10:00"]
    assert activity.layout.xaxis.dtick == charts.HOUR_MS
    # Three weeks of opens: day ticks.
    weeks = charts.time_axis([t0, t0 + timedelta(days=21)])
    assert weeks["dtick"] % charts.DAY_MS == 0 and weeks["tickformat"] == "%b %d"
    text = charts.to_json({"data": [{"name": "</script><b>"}]})
    assert "</script>" not in text and "\\u003c/script" in text


def test_people_tabs_follow_opens_on_final_responses(app, redis_conn):
    from app.services.responses import apply_event

    mailing = build([Response.OPENED] * 3 + [Response.SPAM] * 4 + [Response.HARD_BOUNCE] * 2)
    spam = ids_of(mailing, {Response.SPAM})
    first = reports.audience_page(mailing.id, "open", counters=totals.get(mailing.id))
    assert [r.id for r in first.rows] == ids_of(mailing, {Response.OPENED})
    # A complainer's open arrives: the response stays Spam, and the person is now an opener.
    apply_event(spam[1], kind="open", source="tracking", occurred_at=datetime.now(UTC))
    counters = totals.get(mailing.id)
    page = reports.audience_page(mailing.id, "open", counters=counters)
    assert [r.id for r in page.rows] == sorted(ids_of(mailing, {Response.OPENED}) + [spam[1]])
    assert reports.tab_counts(counters)["open"] == len(page.rows) == 4
    # Pages of 2, both ways, over the dense and the sparse responses together.
    size, seen, page = 2, [], reports.audience_page(mailing.id, "open", size=2, counters=counters)
    while True:
        seen += [r.id for r in page.rows]
        if page.last:
            break
        page = reports.audience_page(mailing.id, "open", after=page.next_after, size=size,
                                     counters=counters)
    assert seen == [r.id for r in reports.audience_page(mailing.id, "open", counters=counters).rows]
    back = reports.audience_page(mailing.id, "open", last=True, size=size, counters=counters)
    assert [r.id for r in back.rows] == seen[-2:] and not back.first

"""Dashboard read models: totals from counters, progress, keyset pages, CSV, contact history."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from app import charts
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, ResponseEvent
from app.services import reports, totals


def build(responses: list[Response], *, status: Status = Status.SENT, name: str = "M",
          one_off: bool = False) -> Mailing:
    """A mailing whose recipients have the given responses, with counters to match."""
    mailing = Mailing(name=name, status=status.value, one_off=one_off,
                      started_at=datetime.now(UTC) - timedelta(minutes=10))
    db.session.add(mailing)
    db.session.flush()
    for i, response in enumerate(responses):
        db.session.add(Recipient(mailing_id=mailing.id, address=f"p{i:04d}@example.org",
                                 response=response.value))
    counts = Counter(r.value for r in responses)
    totals.bump(mailing.id, {totals.response_key(r): n for r, n in counts.items()})
    db.session.commit()
    return mailing


def ids_of(mailing: Mailing, wanted: set[Response] | None = None) -> list[int]:
    return sorted(r.id for r in db.session.query(Recipient).filter_by(mailing_id=mailing.id)
                  if wanted is None or Response(r.response) in wanted)


MIXED = [Response.SENT, Response.OPENED, Response.CLICKED, Response.CANCELED,
         Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.DUPLICATE, Response.SPAM] * 13


@pytest.mark.parametrize("tab", list(reports.TABS))
def test_keyset_pages_walk_every_tab_forward_and_backward(app, tab):
    mailing = build(MIXED)
    wanted = set(reports.TABS[tab][1])
    expected = ids_of(mailing, wanted)
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
        "clicked_unique": 10, "opens": 90, "opens_machine": 30, "clicks": 12,
        "response:planned": 50, "response:canceled": 3, "response:duplicate": 2,
        "response:unknown": 1, "blocked": 2, "complaints": 1,
    })
    assert t.open_rate == pytest.approx(0.25) and t.click_rate == pytest.approx(0.05)
    assert t.opens_human == 60 and t.blocked_or_spam == 3
    assert t.not_sent == {Response.CANCELED: 3, Response.DUPLICATE: 2}
    assert t.not_sent_total == 5 and t.failed == {Response.UNKNOWN: 1}
    assert t.percent_sent == pytest.approx(80.0) and t.processed == 200
    assert reports.email_totals({}).open_rate == 0.0


def test_time_left_follows_the_pace_so_far():
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    mailing = Mailing(name="x", status=Status.SENDING.value, started_at=now - timedelta(minutes=10))
    t = reports.email_totals({"eligible": 300, "handed_off": 100, "response:planned": 200})
    progress = reports.sending_progress(mailing, t, now)
    assert progress.time_left == timedelta(minutes=20)
    assert reports.human_duration(progress.time_left) == "20 min 00 s"
    assert reports.human_duration(None) == "—"
    mailing.status = Status.SENT.value
    assert reports.sending_progress(mailing, t, now).time_left is None


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
    text = charts.to_json({"data": [{"name": "</script><b>"}]})
    assert "</script>" not in text and "\\u003c/script" in text

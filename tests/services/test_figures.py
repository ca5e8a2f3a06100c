"""Every figure of a mailing agrees with every other, on every surface.

One mailing reaches every response through the real services: preparation (each not-sent reason),
the sender (accepted, refused permanently, refused as blocked, refused for a while, a message that
cannot be built, an address that left between preparation and hand-off), crash recovery (Unknown),
the send-until deadline (expired), a cancel with a batch in flight (canceled) and response events
(delivered, opens by people and machines, clicks, bounces, blocked, dropped, spam, unsubscribe).
Then the mailing page, its poll, each audience tab and each CSV export are read back as a user
gets them, and every number is checked against the others and against the database.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter

from sqlalchemy import func, select

from app.domain import figures
from app.domain.lifecycle import Status
from app.domain.responses import LABELS, Response
from app.extensions import db
from app.models import Mailing, Recipient
from app.services import reports
from tests.factories import (
    bars_of,
    build_every_response,
    figures_of,
    reasons_of,
    rows_of,
    tab_counts_of,
)


def assert_every_surface_agrees(client, mailing_id: int) -> dict[str, int]:
    """Read the page, its poll, every tab and every CSV export; check every figure against the
    others and against the database. Returns the figures shown."""
    db.session.expire_all()
    in_db = rows_of(mailing_id)
    audience = sum(in_db.values())
    sent = sum(in_db[r.value] for r in figures.SENT)
    not_sent = sum(in_db[r.value] for r in figures.NOT_SENT)
    waiting = sum(in_db[r.value] for r in figures.WAITING)
    openers = db.session.execute(select(func.count()).where(
        Recipient.mailing_id == mailing_id,
        Recipient.opens > Recipient.machine_opens)).scalar_one()
    clickers = db.session.execute(select(func.count()).where(
        Recipient.mailing_id == mailing_id,
        Recipient.clicks > Recipient.machine_clicks)).scalar_one()
    page = client.get(f"/mailings/{mailing_id}").get_data(as_text=True)
    poll = client.get(f"/mailings/{mailing_id}/_live")
    assert poll.status_code == 200  # sending, or ended just now: still refreshing
    poll_html = poll.get_data(as_text=True)

    for html in (page, poll_html):
        shown = figures_of(html)
        tabs = tab_counts_of(html)
        reasons = reasons_of(html)
        # Sent + not sent + waiting = audience, on the page and against the database.
        assert shown["sent"] == shown["split-sent"] == sent
        assert shown["not_sent"] == shown["split-not_sent"] == not_sent
        assert shown["split-waiting"] == shown["progress-waiting"] == waiting
        assert shown["audience"] == audience
        assert shown["sent"] + shown["not_sent"] + shown["split-waiting"] == shown["audience"]
        # The reasons add up to not sent, exactly, and each matches the database.
        assert sum(reasons.values()) == shown.get("reasons-total", 0) == shown["not_sent"]
        assert reasons == {r.value: in_db[r.value] for r in figures.NOT_SENT if in_db[r.value]}
        # People who opened: the figure, the table and the tab; likewise clickers.
        assert shown["openers_human"] == shown["openers_human-table"] == tabs["open"] == openers
        assert shown["clickers_human"] == shown["clickers_human-table"] == tabs["click"] == clickers
        assert shown["openers"] == shown["openers_human"] + shown["openers_machine_only"]
        assert shown["opens"] == shown["opens_human"] + shown["opens_machine"]
        assert shown["clicks"] == shown["clicks_human"] + shown["clicks_machine"]
        # Tabs against the totals.
        assert tabs["all"] == audience and tabs["not_sent"] == not_sent
        assert tabs["bounce"] == shown["soft_bounce"] + shown["hard_bounce"]
        assert tabs["spam"] == shown["blocked"] + shown["spam"]
        assert tabs["dropped"] == shown["dropped"] and tabs["unsubscribed"] == shown["unsubscribed"]
        # The chart plots the responses as they are in the database.
        bars = bars_of(html)
        assert bars == {LABELS[Response(r)]: n for r, n in in_db.items()}
        assert sum(bars.values()) == audience
        assert sum(bars.get(LABELS[r], 0) for r in figures.NOT_SENT) == not_sent
        assert sum(bars.get(LABELS[r], 0) for r in figures.SENT) == sent
        assert bars.get(LABELS[Response.SOFT_BOUNCE], 0) + bars.get(
            LABELS[Response.HARD_BOUNCE], 0) == tabs["bounce"]
    assert tab_counts_of(page) == tab_counts_of(poll_html)

    # Each tab lists as many rows as its count, and its CSV has the same rows.
    counts = tab_counts_of(page)
    for key, (_label, responses) in reports.TABS.items():
        listed = client.get(f"/mailings/{mailing_id}/audience?tab={key}").get_data(as_text=True)
        rows = re.findall(r'<span class="resp resp-(\w+)">', listed)
        assert len(rows) == counts[key], (key, rows)
        assert tab_counts_of(listed) == counts
        export = client.get(f"/mailings/{mailing_id}/audience.csv?tab={key}")
        lines = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
        assert lines[0] == list(reports.CSV_HEADER)
        assert Counter(r[3] for r in lines[1:]) == Counter(rows), key
        assert {Response(r) for r in rows} <= set(responses)
    everyone = client.get(f"/mailings/{mailing_id}/audience.csv?tab=all").get_data(as_text=True)
    assert Counter(r[3] for r in list(csv.reader(io.StringIO(everyone)))[1:]) == in_db
    return figures_of(page)


def test_every_figure_agrees_on_every_surface(app, auth, client, redis_conn, smtp,  # noqa: F811
                                              monkeypatch):
    auth.login()
    seen_mid_send: list[dict[str, int]] = []

    def mid_send(mailing_id: int) -> None:
        in_db = rows_of(mailing_id)
        assert in_db[Response.PLANNED.value] > 0 and in_db[Response.SENT.value] > 0
        assert in_db[Response.DEFERRED.value] == 1  # user10, refused for now
        seen_mid_send.append(assert_every_surface_agrees(client, mailing_id))

    mailing_id = build_every_response(app, redis_conn, smtp, monkeypatch, mid_send)
    assert seen_mid_send and seen_mid_send[0]["split-waiting"] == 11
    mailing = db.session.get(Mailing, mailing_id)
    assert mailing.status == Status.CANCELED.value
    in_db = rows_of(mailing_id)
    # Every response the mailing can reach is here (Planned and Deferred were seen mid-send).
    assert set(in_db) == {r.value for r in Response} - {Response.PLANNED.value,
                                                         Response.DEFERRED.value}, in_db
    assert in_db == Counter({
        "sent": 2, "delivered": 3, "opened": 3, "clicked": 2, "soft_bounce": 1,
        "hard_bounce": 2, "blocked": 2, "dropped": 1, "spam": 1, "unsubscribed": 1,
        "unknown": 1, "duplicate": 1, "do_not_email": 2, "type_unsubscribed": 1,
        "invalid_address": 1, "inactive": 1, "delivery_error": 1, "canceled": 3, "expired": 8,
    })
    shown = assert_every_surface_agrees(client, mailing_id)
    assert (shown["audience"], shown["sent"], shown["not_sent"]) == (37, 19, 18)
    assert (shown["openers_human"], shown["openers"], shown["openers_machine_only"]) == (5, 6, 1)
    assert (shown["clickers_human"], shown["clickers"], shown["clickers_machine_only"]) == (3, 4, 1)
    assert (shown["opens"], shown["opens_human"], shown["opens_machine"]) == (8, 6, 2)
    assert (shown["clicks"], shown["clicks_human"], shown["clicks_machine"]) == (4, 3, 1)
    # The cancel's settled truth: what was sent and what was not, as the page says it.
    page = client.get(f"/mailings/{mailing_id}").get_data(as_text=True)
    assert "19 sent; 18 recipients were not sent" in page

"""The home page's figures equal the figures they summarise: each sent mailing's sent count and
rates equal its own page's, the chart draws the table's rates, the contacts equal the rows and a
mailing to everyone's audience, an interrupted mailing's "still to send" equals its rows, and
the quota used equals the month's usage row."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, ContactList, ListMember, QuotaUsage, Recipient
from app.services import audience
from app.templating import pct
from tests.factories import build_reported, figures_of, make_mailing

R = Response


def _rates_table(page: str) -> dict[str, tuple[int, str, str, str]]:
    [table] = re.findall(r'<table[^>]*data-testid="rates-table">(.*?)</table>', page, re.S)
    rows = re.findall(r'<a href="/mailings/\d+">([^<]+)</a></td>\s*<td class="num">([\d,]+)</td>'
                      r'<td class="num">([^<]+)</td>\s*<td class="num">([^<]+)</td>'
                      r'<td class="num">([^<]+)</td>', table)
    return {name: (int(sent.replace(",", "")), o, c, b) for name, sent, o, c, b in rows}


def _testid(page: str, name: str) -> int:
    [value] = re.findall(rf'data-testid="{name}">([\d,]+)<', page)
    return int(value.replace(",", ""))


def test_each_mailings_rates_on_the_home_page_equal_its_own_page(app, auth, client):
    auth.login()
    first = build_reported([R.DELIVERED] * 5 + [R.OPENED] * 3 + [R.CLICKED] * 2
                           + [R.SOFT_BOUNCE, R.HARD_BOUNCE, R.HARD_BOUNCE, R.DO_NOT_EMAIL],
                           name="First")
    second = build_reported([R.SENT] * 7 + [R.CLICKED] + [R.BLOCKED, R.INACTIVE], name="Second")
    now = datetime.now(UTC)
    first.finished_at, second.finished_at = now - timedelta(days=2), now - timedelta(days=1)
    db.session.commit()
    page = client.get("/home").get_data(as_text=True)
    table = _rates_table(page)
    assert set(table) == {"First", "Second"}
    for mailing in (first, second):
        own = figures_of(client.get(f"/mailings/{mailing.id}").get_data(as_text=True))
        rows = Counter(db.session.execute(select(Recipient.response).where(
            Recipient.mailing_id == mailing.id)).scalars())
        bounced = rows[R.SOFT_BOUNCE.value] + rows[R.HARD_BOUNCE.value]
        sent, open_rate, click_rate, bounce_rate = table[mailing.name]
        assert sent == own["sent"]
        assert open_rate == pct(own["openers_human"] / own["sent"])
        assert click_rate == pct(own["clickers_human"] / own["sent"])
        assert bounce_rate == pct(bounced / own["sent"])
    assert table["First"] == (13, pct(5 / 13), pct(2 / 13), pct(3 / 13))
    assert table["Second"] == (9, pct(1 / 9), pct(1 / 9), pct(0))
    # The chart draws the same rates, oldest first.
    bars = {name: dict(values) for name, values in _bars(page).items()}
    assert list(bars["Open rate"]) == ["First", "Second"]
    for name, (_sent, open_rate, click_rate, bounce_rate) in table.items():
        assert pct(bars["Open rate"][name] / 100) == open_rate
        assert pct(bars["Click rate"][name] / 100) == click_rate
        assert pct(bars["Bounce rate"][name] / 100) == bounce_rate


def test_the_home_pages_contacts_equal_the_rows_and_a_mailing_to_everyone(app, auth, client):
    from app.services import settings

    settings.set("inactivity_days", "180")
    db.session.commit()
    now = datetime.now(UTC)
    recent, old = now - timedelta(days=3), now - timedelta(days=400)
    people = ([dict(last_transaction_at=recent)] * 6
              + [dict(do_not_email=True, last_transaction_at=recent)] * 2
              + [dict(valid=False, last_transaction_at=recent)]
              + [dict(valid=False, do_not_email=True, last_transaction_at=old)]  # once: do not email
              + [dict(last_transaction_at=old, created_at=old)] * 3
              + [dict(valid=False, last_transaction_at=old, created_at=old)])  # once: invalid
    everyone = ContactList(name="Everyone")
    db.session.add(everyone)
    db.session.flush()
    for n, values in enumerate(people):
        contact = Contact(email=f"c{n}@example.org", email_key=f"c{n}@example.org", **values)
        db.session.add(contact)
        db.session.flush()
        db.session.add(ListMember(list_id=everyone.id, contact_id=contact.id))
    db.session.commit()
    auth.login()  # the staff user is not a contact
    page = client.get("/home").get_data(as_text=True)

    assert _testid(page, "contacts-total") == db.session.scalar(
        select(func.count()).select_from(Contact)) == len(people)
    mailing = make_mailing([everyone], prevent_duplicates=False)
    counts = audience.materialise(mailing)
    db.session.rollback()
    assert _testid(page, "contacts-eligible") == counts.get(R.PLANNED.value, 0) == 6
    held = {r: _testid(page, f"held-{r}") for r in re.findall(r'data-testid="held-(\w+)"', page)}
    assert held == {r: n for r, n in counts.items() if r != R.PLANNED.value}
    assert held == {R.DO_NOT_EMAIL.value: 3, R.INVALID_ADDRESS.value: 2, R.INACTIVE.value: 3}


def test_still_to_send_and_the_quota_equal_their_rows(app, auth, client):
    auth.login()
    stopped = build_reported([R.PLANNED] * 4 + [R.DEFERRED] * 2 + [R.DELIVERED] * 3
                             + [R.CANCELED], status=Status.INTERRUPTED, name="Stopped")
    stopped.status_reason = "The SMTP server could not be reached for 15 minutes"
    month = datetime.now(UTC).strftime("%Y-%m")
    db.session.merge(QuotaUsage(month=month, used=1234))
    db.session.commit()
    page = client.get("/home").get_data(as_text=True)
    [remaining] = re.findall(rf'<tr data-mailing="{stopped.id}">.*?<td class="num">([\d,]+)</td>',
                             page, re.S)
    left = db.session.scalar(select(func.count()).select_from(Recipient).where(
        Recipient.mailing_id == stopped.id,
        Recipient.response.in_([R.PLANNED.value, R.DEFERRED.value])))
    assert int(remaining.replace(",", "")) == left == 6
    assert _testid(page, "quota-used") == db.session.get(QuotaUsage, month).used == 1234


def _bars(page: str) -> dict[str, list[tuple[str, float]]]:
    """Each trace's bars as (the label under the bar, the value), in the chart's order."""
    [raw] = re.findall(r'<script type="application/json" id="home-figure">(.*?)</script>', page,
                       re.S)
    figure = json.loads(raw)
    axis = figure["layout"].get("xaxis", {})
    labels = dict(zip(axis.get("tickvals", []), axis.get("ticktext", []), strict=True))
    return {t["name"]: [(labels.get(x, x), y) for x, y in zip(t["x"], t["y"], strict=True)]
            for t in figure["data"]}


def test_mailings_of_the_same_name_get_a_bar_each(app, auth, client):
    """A monthly "Newsletter" sent twice is two groups of bars, each with its own rates, not
    one category that hides one mailing behind the other."""
    auth.login()
    now = datetime.now(UTC)
    older = build_reported([R.OPENED] * 4 + [R.DELIVERED] * 6, name="Newsletter")
    newer = build_reported([R.OPENED] + [R.DELIVERED] * 9, name="Newsletter")
    older.finished_at, newer.finished_at = now - timedelta(days=30), now - timedelta(days=1)
    db.session.commit()
    page = client.get("/home").get_data(as_text=True)
    [raw] = re.findall(r'<script type="application/json" id="home-figure">(.*?)</script>', page,
                       re.S)
    for trace in json.loads(raw)["data"]:
        assert len(set(trace["x"])) == len(trace["x"]) == 2, trace["x"]
    bars = _bars(page)
    assert bars["Open rate"] == [("Newsletter", 40.0), ("Newsletter", 10.0)]

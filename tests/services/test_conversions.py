"""Conversions: a transaction within N days after a person's click is the clicked mailing's
conversion, the last click before it wins, and the mailing page's figures are the Conversion
rows."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.domain import conversions as rules
from app.domain.lifecycle import Status
from app.extensions import db
from app.models import (
    AuditEntry,
    Contact,
    Conversion,
    Mailing,
    Recipient,
    ResponseEvent,
    Setting,
    Transaction,
)
from app.services import contacts, conversions, mailings, settings, totals
from tests.factories import HTML, TEXT, make_audience

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _mailing(name: str) -> Mailing:
    mailing = mailings.create(owner_id=None, name=name, subject="Hi", from_address="a@shop.example",
                              html_body=HTML, text_body=TEXT, utm_campaign="autumn")
    mailing.status = Status.SENT.value
    mailing.started_at = mailing.finished_at = T - timedelta(days=30)
    db.session.commit()
    return mailing


def _recipient(mailing: Mailing, contact: Contact) -> Recipient:
    row = Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                    response="clicked", handed_off_at=T - timedelta(days=30))
    db.session.add(row)
    db.session.flush()
    return row


def _click(row: Recipient, at: datetime, machine: bool = False) -> None:
    db.session.add(ResponseEvent(recipient_id=row.id, mailing_id=row.mailing_id, kind="click",
                                 source="tracking", occurred_at=at, applied=True,
                                 machine=machine))
    row.clicks += 1
    if machine:
        row.machine_clicks += 1
    db.session.flush()


def _contacts(n: int) -> list[Contact]:
    make_audience(n)
    return list(db.session.execute(select(Contact).order_by(Contact.id)).scalars())


def _transaction(contact: Contact, at: datetime, amount: str = "") -> Transaction:
    row = Transaction(contact_id=contact.id, occurred_at=at, amount=amount, source="csv")
    db.session.add(row)
    db.session.flush()
    return row


def test_the_last_click_before_the_transaction_wins(app):
    anna = _contacts(1)[0]
    first, second, after = _mailing("First"), _mailing("Second"), _mailing("After")
    _click(_recipient(first, anna), T - timedelta(days=3))
    _click(_recipient(second, anna), T - timedelta(days=1))
    _click(_recipient(after, anna), T + timedelta(minutes=1))  # after it: never credited
    conversion = conversions.attribute(_transaction(anna, T, "49.90"), days=7)
    assert conversion is not None and conversion.mailing_id == second.id
    assert conversion.clicked_at == T - timedelta(days=1)
    assert conversion.amount == Decimal("49.90")


@pytest.mark.parametrize("before,credited", [
    (timedelta(days=7), True),                         # exactly N days: inside
    (timedelta(days=7, seconds=1), False),             # a second more: outside
    (timedelta(0), True),                              # the same instant
])
def test_the_window_edge(app, before, credited):
    anna = _contacts(1)[0]
    mailing = _mailing("Edge")
    _click(_recipient(mailing, anna), T - before)
    conversion = conversions.attribute(_transaction(anna, T), days=7)
    assert (conversion is not None) is credited


def test_machine_clicks_never_convert(app):
    anna = _contacts(1)[0]
    mailing = _mailing("Scanned")
    _click(_recipient(mailing, anna), T - timedelta(hours=1), machine=True)
    assert conversions.attribute(_transaction(anna, T), days=7) is None


def test_one_conversion_per_transaction(app):
    anna = _contacts(1)[0]
    mailing = _mailing("Once")
    _click(_recipient(mailing, anna), T - timedelta(hours=1))
    tx = _transaction(anna, T)
    first = conversions.attribute(tx, days=7)
    assert conversions.attribute(tx, days=7) is first
    assert db.session.execute(select(func.count()).select_from(Conversion)).scalar_one() == 1


def test_recording_a_transaction_attributes_it(app):
    anna = _contacts(1)[0]
    mailing = _mailing("Live")
    now = datetime.now(UTC).replace(microsecond=0)
    _click(_recipient(mailing, anna), now - timedelta(days=2))
    db.session.commit()
    tx = contacts.record_transaction(anna.id, now, amount="EUR 1,299.00", reference="A-1")
    row = db.session.execute(select(Conversion).where(Conversion.transaction_id == tx.id)
                             ).scalar_one()
    assert row.mailing_id == mailing.id and row.amount == Decimal("1299.00")
    # Outside the window (the setting, 7 days by default): no conversion.
    old = contacts.record_transaction(anna.id, now + timedelta(hours=1) - timedelta(days=30))
    assert db.session.execute(select(Conversion).where(Conversion.transaction_id == old.id)
                              ).first() is None


def test_the_window_setting_is_bounded(monkeypatch):
    from app.config import Config, ConfigError

    monkeypatch.setenv("SENDBOARD_CONVERSION_DAYS", "14")
    assert Config().CONVERSION_DAYS == 14
    for bad in ("0", "91", "7.5", "inf"):
        monkeypatch.setenv("SENDBOARD_CONVERSION_DAYS", bad)
        with pytest.raises(ConfigError, match="SENDBOARD_CONVERSION_DAYS"):
            Config()


def test_backfill_and_the_page_figures_equal_the_rows(app, auth, client):
    people = _contacts(4)
    mailing, other = _mailing("Autumn sale"), _mailing("Other")
    rows = [_recipient(mailing, c) for c in people]
    _click(rows[0], T - timedelta(days=1))
    _click(rows[1], T - timedelta(days=2))
    _click(rows[2], T - timedelta(days=3))
    _click(rows[3], T - timedelta(days=1), machine=True)  # a scanner: not a clicker
    totals.bump(mailing.id, {"clicked_unique_human": 3, "clicked_unique": 4})
    # Imported transactions (no attribution at recording): the backfill credits them.
    _transaction(people[0], T, "10.00")
    _transaction(people[1], T, "15.50")
    _transaction(people[1], T + timedelta(days=10), "99.00")  # too late
    _transaction(people[3], T, "5.00")  # only a machine click
    # people[2] clicked another mailing later: that one wins.
    _click(_recipient(other, people[2]), T - timedelta(hours=1))
    _transaction(people[2], T, "20.00")
    db.session.commit()
    assert conversions.backfill(mailing.id, days=7) == 2
    assert conversions.backfill(mailing.id, days=7) == 0  # idempotent
    db.session.commit()
    shown = conversions.figures(mailing.id)
    count, revenue = db.session.execute(
        select(func.count(), func.sum(Conversion.amount)).where(Conversion.mailing_id == mailing.id)
    ).one()
    assert (shown.conversions, shown.revenue) == (count, revenue) == (2, Decimal("25.50"))
    assert shown.clickers == 3 and shown.rate == pytest.approx(2 / 3)
    assert conversions.figures(other.id).conversions == 1  # the backfill credits by last click
    assert db.session.execute(select(Conversion.mailing_id).join(
        Transaction, Transaction.id == Conversion.transaction_id).where(
        Transaction.contact_id == people[2].id)).scalar_one() == other.id
    auth.login()
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert 'data-testid="conversions">2<' in page
    assert 'data-testid="revenue">25.50<' in page
    assert 'data-testid="conversion-rate">66.7 %<' in page
    assert "conversions / people who clicked" in page and "UTM tags" in page
    # The page's button runs the same backfill: nothing new to credit now.
    answer = client.post(f"/mailings/{mailing.id}/conversions", follow_redirects=True)
    assert "0 more conversions credited" in answer.get_data(as_text=True)


def test_amounts():
    assert rules.parse_amount("12.5") == Decimal("12.50")
    assert rules.parse_amount("") is None and rules.parse_amount("free") is None
    assert rules.parse_amount("1e400") is None or rules.parse_amount("1e400") < Decimal("1e12")
    assert rules.rate(0, 0) == 0.0


def _save_window(client, days: str):
    """Post the Settings page's form as it stands, with the conversion window changed."""
    form = {key: str(settings.get(key)) for key in settings.SPECS}
    return client.post("/settings", data={**form, "conversion_days": days})


def test_the_window_set_on_the_settings_page_decides_what_converts(app, auth, client):
    anna, ben = _contacts(2)
    mailing = _mailing("Window")
    now = datetime.now(UTC).replace(microsecond=0)
    _click(_recipient(mailing, anna), now - timedelta(days=10))
    _click(_recipient(mailing, ben), now - timedelta(days=5))
    db.session.commit()
    assert conversions.window_days() == 7  # the environment's default
    ten_days = contacts.record_transaction(anna.id, now)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 0

    auth.login("admin@example.org", role="admin")
    assert _save_window(client, "14").status_code == 302
    assert conversions.window_days() == 14
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "settings.save")
                               ).scalar_one()
    assert "conversion_days" in entry.detail
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert "A transaction recorded within 14 days after a person clicked" in page
    # The same click, ten days before a new transaction: inside the 14-day window now.
    later = contacts.record_transaction(anna.id, now + timedelta(minutes=1))
    db.session.commit()
    credited = {c.transaction_id: c.mailing_id for c in db.session.execute(select(Conversion)).scalars()}
    assert credited == {later.id: mailing.id}  # the earlier one stays as it was recorded
    assert ten_days.id not in credited

    # Narrowed to 3 days: a click 5 days before no longer converts.
    assert _save_window(client, "3").status_code == 302
    assert conversions.window_days() == 3
    contacts.record_transaction(ben.id, now)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(Conversion)) == 1
    assert conversions.backfill(mailing.id) == 0  # a backfill reads the same window
    assert _save_window(client, "5").status_code == 302
    assert conversions.backfill(mailing.id) == 1


@pytest.mark.parametrize("bad", ["0", "91", "7.5", "-3", "two weeks", "", "1e400", "nan"])
def test_a_window_out_of_range_is_refused_on_the_settings_page(app, auth, client, bad):
    auth.login("admin@example.org", role="admin")
    response = _save_window(client, bad)
    assert response.status_code == 422
    body = html.unescape(response.get_data(as_text=True))
    shown = f'"{bad}"' if bad else "an empty value"
    assert (f"Conversion window: days after a click a transaction counts: {shown} is not "
            "allowed; enter a whole number from 1 to 90.") in body
    assert 'aria-invalid="true" aria-describedby="e-conversion_days"' in body
    db.session.expire_all()
    assert db.session.get(Setting, "conversion_days") is None
    assert conversions.window_days() == 7
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action == "settings.save")) == 0

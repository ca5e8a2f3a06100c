"""Send windows and delivery at each contact's local time, on a real worker, Redis and SMTP server
with a controlled clock: nothing is handed over outside the window, sending resumes by itself when
it opens, a batch stops at the window's end, and each zone gets its mail at its own wall-clock
time; a contact barred meanwhile is still never mailed. Also the time_zone column of imports and
the contact page's zone."""

from __future__ import annotations

import io
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import AuditEntry, Contact, Mailing, Recipient
from app.services import mailings, sending, windows
from app.services.contacts import import_csv
from jobs.enqueue import kick_sending
from tests.factories import make_audience, make_mailing, run_worker

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE_HOURS = {"window": "on", "window_start": "08:00", "window_end": "20:00",
                "window_day": ["0", "1", "2", "3", "4"]}


class Clock:
    """The engine's clock, moved by the test; `step` advances it on every reading."""

    def __init__(self, at: datetime, step: timedelta = timedelta()) -> None:
        self.at, self.step, self.lock = at, step, threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            now = self.at
            self.at += self.step
            return now


@pytest.fixture
def clock(app, monkeypatch):
    app.config["TIME_ZONE"] = "Europe/Berlin"
    c = Clock(datetime(2026, 12, 5, 9, 0, tzinfo=UTC))  # Saturday 10:00 in Berlin
    engine = (sending.claim, sending.batch, sending.record, sending.state, sending.recovery)
    for module in (*engine, windows, mailings):
        monkeypatch.setattr(module, "utcnow", c)
    return c


def statuses(mailing_id: int) -> Counter[str]:
    db.session.expire_all()
    return Counter(db.session.execute(
        select(Recipient.response).where(Recipient.mailing_id == mailing_id)).scalars())


def in_berlin(at: datetime) -> datetime:
    return at.astimezone(BERLIN)


def test_nothing_is_sent_outside_the_window_and_it_resumes_when_it_opens(
        app, auth, client, redis_conn, smtp, clock):  # noqa: F811
    auth.login()
    mailing = make_mailing([make_audience(20)])
    windows.save_setup(mailing, OFFICE_HOURS)
    db.session.commit()
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENDING.value
    assert statuses(mailing.id) == Counter({"planned": 20}) and smtp.handler.messages == []
    waiting = windows.waiting(mailing, clock.at)
    assert [(w.count, w.at, w.label) for w in waiting] == [
        (20, datetime(2026, 12, 7, 7, 0, tzinfo=UTC), "08:00 Europe/Berlin")]
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert "<li>20 waiting for 08:00 Europe/Berlin</li>" in page
    assert "08:00-20:00, weekdays" in page and "closed now" in page
    # Sunday 23:00: still closed; the tick keeps the queue going and nothing leaves.
    clock.at = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
    kick_sending()
    run_worker(redis_conn)
    assert smtp.handler.messages == []
    # Monday 08:00 in Berlin: it opens, and everything goes without anyone pressing a button.
    clock.at = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    kick_sending()
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert statuses(mailing.id) == Counter({"sent": 20}) and len(smtp.handler.messages) == 20
    for at in db.session.execute(select(Recipient.handed_off_at)).scalars():
        local = in_berlin(at)
        assert local.weekday() < 5 and 8 <= local.hour < 20


def test_a_batch_stops_handing_over_when_the_window_closes(
        app, redis_conn, smtp, clock):  # noqa: F811
    app.config["BATCH_SIZE"] = 100
    mailing = make_mailing([make_audience(40)])
    windows.save_setup(mailing, OFFICE_HOURS)
    db.session.commit()
    # Monday 19:50 in Berlin, and every reading of the clock takes 20 seconds.
    clock.at, clock.step = datetime(2026, 12, 7, 18, 50, tzinfo=UTC), timedelta(seconds=20)
    mailings.send_now(mailing)
    run_worker(redis_conn)
    counts = statuses(mailing.id)
    assert 0 < counts["sent"] < 40 and counts["sent"] + counts["planned"] == 40
    for at in db.session.execute(select(Recipient.handed_off_at)
                                 .where(Recipient.handed_off_at.is_not(None))).scalars():
        assert in_berlin(at).hour < 20  # not one message after 20:00
    assert len(smtp.handler.messages) == counts["sent"]
    db.session.refresh(mailing)
    assert mailing.status == Status.SENDING.value
    # Tuesday 08:00: the rest goes, each once.
    clock.at, clock.step = datetime(2026, 12, 8, 7, 0, tzinfo=UTC), timedelta()
    kick_sending()
    run_worker(redis_conn)
    assert statuses(mailing.id) == Counter({"sent": 40})
    assert set(Counter(m.rcpt[0] for m in smtp.handler.messages).values()) == {1}


def test_local_delivery_reaches_each_zone_at_its_own_clock_and_never_a_barred_contact(
        app, redis_conn, smtp, clock):  # noqa: F811
    audience = make_audience(9)
    contacts = db.session.execute(select(Contact).order_by(Contact.id)).scalars().all()
    zones = ["", "", "", "America/New_York", "America/New_York", "Asia/Tokyo", "Asia/Tokyo",
             "Mars/Olympus_Mons", "America/New_York"]  # an unknown zone counts as the org's
    for contact, zone in zip(contacts, zones, strict=True):
        contact.time_zone = zone
    db.session.commit()
    mailing = make_mailing([audience])
    mailing.local_delivery = True
    mailing.send_at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
    mailing.send_at_zone = "Europe/Berlin"
    mailing.status = Status.PREPARING.value
    db.session.commit()
    clock.at = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    mailings.prepare(mailing.id)
    release = {r.contact_id: r.release_at for r in db.session.execute(
        select(Recipient).where(Recipient.mailing_id == mailing.id)).scalars()}
    berlin, new_york = (datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
                        datetime(2026, 12, 1, 14, 0, tzinfo=UTC))
    assert [release[c.id] for c in contacts] == [berlin, berlin, berlin, new_york, new_york,
                                                 None, None, berlin, new_york]
    assert [(w.count, w.label) for w in windows.waiting(mailing, clock.at)] == [
        (4, "09:00 Europe/Berlin"), (3, "09:00 America/New_York")]

    kick_sending()
    run_worker(redis_conn)  # 07:30 UTC: only Tokyo, where 09:00 has passed
    assert {m.rcpt[0] for m in smtp.handler.messages} == {contacts[5].email, contacts[6].email}
    # One New York contact unsubscribes while waiting.
    contacts[8].do_not_email = True
    db.session.commit()
    clock.at = berlin
    kick_sending()
    run_worker(redis_conn)
    assert len(smtp.handler.messages) == 6
    clock.at = new_york
    kick_sending()
    run_worker(redis_conn)
    received = Counter(m.rcpt[0] for m in smtp.handler.messages)
    assert len(received) == 8 and set(received.values()) == {1}
    assert contacts[8].email not in received
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    for contact, zone in zip(contacts[:8], zones, strict=False):
        at = db.session.execute(select(Recipient.handed_off_at).where(
            Recipient.contact_id == contact.id)).scalar_one()
        if zone in ("America/New_York",):
            assert at.astimezone(ZoneInfo(zone)).hour == 9


def test_import_sets_the_time_zone_and_refuses_an_unknown_one(app):
    result = import_csv(io.BytesIO(
        b"email,name,time_zone\n"
        b"ny@example.org,Ny,America/New_York\n"
        b"plain@example.org,Plain,\n"
        b"moon@example.org,Moon,Moon/Base\n"), list_name="Zones")
    assert (result.created, result.rejected) == (2, 1)
    assert "Moon/Base" in result.errors[0].reason and result.errors[0].line == 4
    by_email = {c.email: c for c in db.session.execute(select(Contact)).scalars()}
    assert by_email["ny@example.org"].time_zone == "America/New_York"
    assert by_email["plain@example.org"].time_zone == ""
    # A re-import with a blank cell keeps the known zone; a new one replaces it.
    import_csv(io.BytesIO(b"email;time zone\nny@example.org;\nplain@example.org;Asia/Tokyo\n"),
               list_name=None)
    db.session.expire_all()
    assert by_email["ny@example.org"].time_zone == "America/New_York"
    assert by_email["plain@example.org"].time_zone == "Asia/Tokyo"


def test_contact_page_shows_and_sets_the_zone_with_the_picker(app, auth, client):
    app.config["TIME_ZONE"] = "Europe/Berlin"
    auth.login()
    contact = Contact(email="z@example.org", email_key="z@example.org", name="Z")
    db.session.add(contact)
    db.session.commit()
    page = client.get(f"/contacts/{contact.id}").get_data(as_text=True)
    assert "(the organisation&#39;s: Europe/Berlin)" in page or \
        "(the organisation's: Europe/Berlin)" in page
    assert 'list="c-zone-zones"' in page and 'value="Europe/Berlin"' in page
    assert '<option value="US/Eastern">' not in page and '<option value="Asia/Kolkata">' in page
    for bad in ("Asia/Calcuttaa", "x" * 500, "../../etc/passwd"):
        response = client.post(f"/contacts/{contact.id}/time-zone", data={"time_zone": bad})
        assert response.status_code == 302
        db.session.refresh(contact)
        assert contact.time_zone == ""
    client.post(f"/contacts/{contact.id}/time-zone", data={"time_zone": "America/Chicago"})
    db.session.refresh(contact)
    assert contact.time_zone == "America/Chicago"
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "contact.time_zone")
                               ).scalar_one()
    assert entry.detail == "America/Chicago"
    assert client.post("/contacts/999999/time-zone", data={"time_zone": "UTC"}).status_code == 404


def test_the_editor_saves_the_test_and_window_and_refuses_bad_input(app, auth, client):
    auth.login()
    mailing = make_mailing([make_audience(3)])
    form = {"ab": "on", "ab_share": "25", "ab_wait_minutes": "90", "ab_metric": "click",
            "variant_subject_0": "One", "variant_subject_1": "Two", "variant_from_1": "Team",
            "window": "on", "window_start": "09:30", "window_end": "24:00",
            "window_day": ["5", "6"], "local_delivery": "on"}
    response = client.post(f"/mailings/{mailing.id}/ab-window", data=form)
    assert response.status_code == 302
    db.session.refresh(mailing)
    assert (mailing.ab_share, mailing.ab_wait_minutes, mailing.ab_metric) == (25, 90, "click")
    assert (mailing.window_start_minute, mailing.window_end_minute, mailing.window_days) == (
        570, 1440, 96)
    assert mailing.local_delivery is True
    page = client.get(f"/mailings/{mailing.id}/edit").get_data(as_text=True)
    assert 'value="Two"' in page and 'value="09:30"' in page and 'value="24:00"' in page
    for bad in ({**form, "window_start": "25:00"}, {**form, "window_day": ["7"]},
                {**form, "ab_share": "1e9"}, {**form, "ab_metric": "x" * 300},
                {**form, "window_day": []}):
        response = client.post(f"/mailings/{mailing.id}/ab-window", data=bad)
        assert response.status_code == 302
        db.session.refresh(mailing)
        assert (mailing.ab_share, mailing.window_start_minute, mailing.window_days) == (
            25, 570, 96)
    mailing.status = Status.SENDING.value
    db.session.commit()
    client.post(f"/mailings/{mailing.id}/ab-window", data={**form, "ab_share": "50"})
    db.session.refresh(mailing)
    assert mailing.ab_share == 25  # locked once sending


def test_window_rules_read_the_organisations_zone_setting(app):
    mailing = Mailing(name="x", window_start_minute=480, window_end_minute=1200, window_days=127)
    app.config["TIME_ZONE"] = "America/New_York"
    noon_utc = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 07:00 in New York
    assert not windows.open_now(mailing, noon_utc)
    app.config["TIME_ZONE"] = "Europe/Berlin"  # 13:00 in Berlin
    assert windows.open_now(mailing, noon_utc)
    assert windows.closes_at(mailing, noon_utc) == datetime(2026, 12, 1, 19, 0, tzinfo=UTC)


def test_the_schedule_form_uses_the_zone_picker_defaulting_to_the_organisations_zone(
        app, auth, client):
    app.config["TIME_ZONE"] = "America/Chicago"
    auth.login(role="admin")
    mailing = make_mailing([make_audience(2)])
    page = client.get(f"/mailings/{mailing.id}").get_data(as_text=True)
    assert 'id="s-zone" list="s-zone-zones" value="America/Chicago"' in page
    assert '<option value="Asia/Kolkata">' in page and '<option value="US/Central">' not in page
    when = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    refused = client.post(f"/mailings/{mailing.id}/schedule",
                          data={"local_time": when, "zone": "Asia/Calcuttta"})
    assert refused.status_code < 500
    db.session.refresh(mailing)
    assert mailing.status == Status.DRAFT.value
    client.post(f"/mailings/{mailing.id}/schedule", data={"local_time": when,
                                                          "zone": "Asia/Kolkata"})
    db.session.refresh(mailing)
    assert (mailing.status, mailing.send_at_zone) == (Status.SCHEDULED.value, "Asia/Kolkata")


def test_the_settings_page_sets_the_organisations_zone(app, auth, client):
    app.config["TIME_ZONE"] = "Europe/Berlin"
    auth.login(role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert '<strong id="org-zone-now">Europe/Berlin</strong>' in page
    for bad in ("Europe/Berlinn", "y" * 300):
        assert client.post("/settings/time-zone", data={"time_zone": bad}).status_code == 302
        assert windows.org_zone() == "Europe/Berlin"
    client.post("/settings/time-zone", data={"time_zone": "Asia/Tokyo"})
    assert windows.org_zone() == "Asia/Tokyo"
    mailing = Mailing(name="x", window_start_minute=480, window_end_minute=1200, window_days=127)
    assert windows.open_now(mailing, datetime(2026, 12, 1, 0, 0, tzinfo=UTC))  # 09:00 in Tokyo
    entry = db.session.execute(select(AuditEntry).where(
        AuditEntry.action == "settings.time_zone")).scalar_one()
    assert entry.detail == "Asia/Tokyo"
    client.post("/settings/time-zone", data={"time_zone": ""})
    assert windows.org_zone() == "Europe/Berlin"  # back to SENDBOARD_TIME_ZONE
    auth.logout()
    auth.login("viewer@example.org", role="viewer")
    assert client.post("/settings/time-zone", data={"time_zone": "UTC"}).status_code == 403
    assert windows.org_zone() == "Europe/Berlin"

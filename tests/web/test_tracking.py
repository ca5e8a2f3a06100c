"""Open pixel, click redirect, unsubscribe (RFC 8058) and preference pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app import config as app_config
from app import create_app
from app.domain.responses import Response
from app.extensions import db
from app.models import (
    Contact,
    EmailType,
    Mailing,
    Recipient,
    ResponseEvent,
    TrackedLink,
    TypeOptOut,
)
from app.services import totals
from app.services.tokens import recipient_token
from app.tracking.routes import PIXEL

LONG_AGO = datetime.now(UTC) - timedelta(hours=3)


def make_recipient(*, email_type: bool = True, handed_off_at: datetime = LONG_AGO):
    etype = EmailType(name="Newsletter") if email_type else None
    if etype:
        db.session.add(etype)
        db.session.add(EmailType(name="Offers"))
        db.session.flush()
    mailing = Mailing(name="Autumn", status="sent", email_type_id=etype.id if etype else None)
    other = Mailing(name="Other", status="sent")
    contact = Contact(email="ann@example.org", email_key="ann@example.org")
    db.session.add_all([mailing, other, contact])
    db.session.flush()
    r = Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                  response=Response.SENT.value, message_id="r1.ab@sendboard.local",
                  handed_off_at=handed_off_at)
    link = TrackedLink(mailing_id=mailing.id, url="https://example.org/offer?a=1&b=2")
    foreign = TrackedLink(mailing_id=other.id, url="https://evil.example/")
    db.session.add_all([r, link, foreign])
    db.session.commit()
    totals.bump(mailing.id, {"response:sent": 1})
    db.session.commit()
    return r, link, foreign


def test_open_pixel_records_an_open(app, client):
    r, _, _ = make_recipient()
    resp = client.get(f"/t/o/{recipient_token(r.id)}",
                      headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Thunderbird/128"})
    assert resp.status_code == 200 and resp.data == PIXEL and resp.mimetype == "image/gif"
    assert "no-store" in resp.headers["Cache-Control"]
    row = db.session.get(Recipient, r.id)
    assert (row.response, row.opens, row.machine_opens) == ("opened", 1, 0)


@pytest.mark.parametrize("agent", ["Mozilla/5.0", "Mozilla/5.0 (compatible; Yahoo! Slurp)"])
def test_proxy_open_is_machine(app, client, agent):
    r, _, _ = make_recipient()
    client.get(f"/t/o/{recipient_token(r.id)}", headers={"User-Agent": agent})
    row = db.session.get(Recipient, r.id)
    assert (row.opens, row.machine_opens, row.response) == (1, 1, "delivered")


@pytest.mark.parametrize("agent", [
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
])
def test_webmail_image_proxies_open_for_a_reader(app, client, agent):
    """Gmail and Yahoo load images through their proxies when the reader opens the message."""
    r, _, _ = make_recipient()
    client.get(f"/t/o/{recipient_token(r.id)}", headers={"User-Agent": agent})
    row = db.session.get(Recipient, r.id)
    assert (row.opens, row.machine_opens, row.response) == (1, 0, "opened")


def test_open_right_after_hand_off_is_machine(app, client):
    r, _, _ = make_recipient(handed_off_at=datetime.now(UTC))
    client.get(f"/t/o/{recipient_token(r.id)}", headers={"User-Agent": "Thunderbird"})
    assert db.session.get(Recipient, r.id).machine_opens == 1


@pytest.mark.parametrize("token", ["garbage", "x" * 5000, "MQ.forged", "%00%ff", "1"])
def test_open_pixel_never_fails_on_garbage(app, client, token):
    make_recipient()
    resp = client.get(f"/t/o/{token}")
    assert resp.status_code == 200 and resp.data == PIXEL
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 0


def test_click_redirects_to_the_stored_url_and_counts(app, client):
    r, link, _ = make_recipient()
    resp = client.get(f"/t/c/{recipient_token(r.id)}/{link.id}",
                      headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/130"})
    assert resp.status_code == 302 and resp.headers["Location"] == link.url
    row = db.session.get(Recipient, r.id)
    assert (row.response, row.clicks, row.machine_clicks) == ("clicked", 1, 0)
    assert db.session.get(TrackedLink, link.id).clicks == 1
    assert totals.get(r.mailing_id)["clicked_unique_human"] == 1


def test_head_click_is_a_scanner(app, client):
    r, link, _ = make_recipient()
    resp = client.head(f"/t/c/{recipient_token(r.id)}/{link.id}")
    assert resp.status_code == 302
    row = db.session.get(Recipient, r.id)
    assert (row.clicks, row.machine_clicks, row.response) == (1, 1, "delivered")
    assert totals.get(r.mailing_id)["clicks_machine"] == 1


def test_click_within_seconds_of_hand_off_is_a_scanner(app, client):
    r, link, _ = make_recipient(handed_off_at=datetime.now(UTC) - timedelta(seconds=3))
    client.get(f"/t/c/{recipient_token(r.id)}/{link.id}", headers={"User-Agent": "Chrome"})
    assert db.session.get(Recipient, r.id).machine_clicks == 1


@pytest.mark.parametrize("path", [
    "/t/c/{token}/{foreign}",        # a link of another mailing
    "/t/c/forged-token/{link}",      # a tampered token
    "/t/c/{token}/999999",           # no such link
    "/t/c/{token}/99999999999999999999999999",  # overflows the database integer
    "/t/c/{token}/abc",
])
def test_click_refuses_what_is_not_ours(app, client, path):
    r, link, foreign = make_recipient()
    url = path.format(token=recipient_token(r.id), foreign=foreign.id, link=link.id)
    resp = client.get(url)
    assert resp.status_code == 404 and "Location" not in resp.headers
    assert db.session.get(Recipient, r.id).clicks == 0


def test_one_click_unsubscribe(app, client):
    r, _, _ = make_recipient()
    resp = client.post(f"/u/{recipient_token(r.id)}", data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200
    assert "Set-Cookie" not in resp.headers and "Location" not in resp.headers
    row = db.session.get(Recipient, r.id)
    assert row.response == "unsubscribed"
    # The mailing has an email type: one-click leaves that type.
    mailing = db.session.get(Mailing, r.mailing_id)
    assert db.session.get(TypeOptOut, (row.contact_id, mailing.email_type_id)) is not None


def test_one_click_without_type_leaves_all(app, client):
    r, _, _ = make_recipient(email_type=False)
    client.post(f"/u/{recipient_token(r.id)}", data={"List-Unsubscribe": "One-Click"})
    contact = db.session.get(Contact, r.contact_id)
    assert contact.do_not_email and contact.do_not_email_reason == "unsubscribed"


def test_confirm_page_then_leave_all(app, client):
    r, _, _ = make_recipient()
    token = recipient_token(r.id)
    page = client.get(f"/u/{token}")
    assert page.status_code == 200 and b"Newsletter" in page.data
    assert b"ann@example.org" in page.data
    assert db.session.get(Recipient, r.id).response == "sent"  # GET changes nothing
    done = client.post(f"/u/{token}", data={"scope": "all"})
    assert done.status_code == 200 and b"no longer receive emails" in done.data
    assert db.session.get(Contact, r.contact_id).do_not_email


def test_unknown_token_gets_a_page_not_an_error(app, client):
    assert client.get("/u/nonsense").status_code == 404
    assert client.post("/u/nonsense", data={"List-Unsubscribe": "One-Click"}).status_code == 404


def test_preferences_leave_and_rejoin_a_type(app, client):
    r, _, _ = make_recipient()
    token = recipient_token(r.id)
    offers = db.session.execute(select(EmailType).where(EmailType.name == "Offers")).scalar_one()
    page = client.post(f"/u/{token}/preferences",
                       data={"action": "leave", "email_type_id": str(offers.id)})
    assert page.status_code == 200 and "You left “Offers”".encode() in page.data
    assert db.session.get(TypeOptOut, (r.contact_id, offers.id)) is not None
    client.post(f"/u/{token}/preferences", data={"action": "join", "email_type_id": offers.id})
    assert db.session.get(TypeOptOut, (r.contact_id, offers.id)) is None


def test_preferences_subscribe_again_after_leaving_all(app, client):
    r, _, _ = make_recipient()
    token = recipient_token(r.id)
    client.post(f"/u/{token}", data={"scope": "all"})
    page = client.get(f"/u/{token}/preferences")
    assert b"Subscribe again" in page.data
    client.post(f"/u/{token}/preferences", data={"action": "join_all"})
    assert not db.session.get(Contact, r.contact_id).do_not_email


def test_preferences_bad_input_is_400(app, client):
    r, _, _ = make_recipient()
    token = recipient_token(r.id)
    for data in ({"action": "leave", "email_type_id": "x"}, {"action": "bogus"},
                 {"action": "leave", "email_type_id": "424242"}):
        assert client.post(f"/u/{token}/preferences", data=data).status_code == 400


@pytest.fixture
def csrf_app(tmp_path):
    config = app_config.TestConfig(str(tmp_path))
    config.WTF_CSRF_ENABLED = True
    app = create_app(config)
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.engine.dispose()


def test_with_csrf_on_one_click_passes_and_forms_need_the_token(csrf_app):
    client = csrf_app.test_client()
    r, _, _ = make_recipient()
    token = recipient_token(r.id)
    assert client.post(f"/u/{token}", data={"scope": "all"}).status_code == 400
    assert client.post(f"/u/{token}/preferences", data={"action": "leave_all"}).status_code == 400
    assert db.session.get(Recipient, r.id).response == "sent"
    one_click = csrf_app.test_client().post(f"/u/{token}",
                                            data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "Set-Cookie" not in one_click.headers
    # The page's own form works with the token it was given.
    page = client.get(f"/u/{token}/preferences").data.decode()
    csrf_token = page.split('name="csrf_token" value="')[1].split('"')[0]
    resp = client.post(f"/u/{token}/preferences",
                       data={"action": "join_all", "csrf_token": csrf_token})
    assert resp.status_code == 200

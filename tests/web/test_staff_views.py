"""Staff never create recipient activity: every page that shows a sent message shows it with the
open pixel and tracked links inert, and pixel or click requests from a signed-in session count
nothing (while the same requests from a reader do)."""

from __future__ import annotations

import html
import quopri
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Mailing, Recipient, ResponseEvent, TrackedLink
from app.runtime.capture import MaildirWriter
from app.services import mailings, totals
from app.services.responses import apply_event
from app.services.tokens import read_recipient_token, recipient_token
from tests.factories import make_audience, make_mailing, run_worker

TRACKING = re.compile(r"/t/[oc]/", re.IGNORECASE)
OFFER = "https://example.org/offer?a=1&b=2"


def _outside_raw_source(page: str) -> str:
    """The page without the byte-for-byte source listings (text in a <pre>, never fetched)."""
    return re.sub(r'<pre class="message" data-testid="raw-(?:message|source)">.*?</pre>', "",
                  page, flags=re.S)


def _srcdocs(page: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'srcdoc="([^"]*)"', page)]


@pytest.fixture
def delivered(app, redis_conn, smtp):  # noqa: F811
    """A sent mailing whose recipient user1 is Delivered; its message is in the capture box."""
    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    recipient = db.session.execute(
        select(Recipient).where(Recipient.address == "user1@example.org")).scalar_one()
    apply_event(recipient.id, kind="delivered", source="webhook",
                occurred_at=datetime.now(UTC) - timedelta(minutes=50))
    db.session.refresh(recipient)
    assert recipient.response == "delivered"
    data = smtp.by_recipient()["user1@example.org"][0].data
    box = Path(app.config.get("CAPTURE_DIR") or Path(app.config["INSTANCE_DIR"]) / "capture")
    writer = MaildirWriter(box)
    name = writer.store(data, "bounce@bounces.test", ["user1@example.org"]).file
    writer.close()
    return mailing, recipient, data, name


def _state(recipient_id: int, mailing_id: int) -> tuple[object, ...]:
    db.session.expire_all()
    r = db.session.get(Recipient, recipient_id)
    events = db.session.scalar(select(func.count()).select_from(ResponseEvent)
                               .where(ResponseEvent.recipient_id == recipient_id))
    return (r.response, r.opens, r.clicks, r.machine_opens, events, totals.get(mailing_id))


def test_the_message_as_sent_carries_live_tracking(delivered) -> None:
    """The premise: what the recipient got has the pixel and a tracked link for them."""
    _, recipient, data, _ = delivered
    decoded = quopri.decodestring(data).decode()
    token = recipient_token(recipient.id)
    assert f"/t/o/{token}" in decoded and f"/t/c/{token}/" in decoded


@pytest.mark.parametrize("view", ["recipient", "fragment", "contact", "captured", "preview"])
def test_staff_views_hold_no_tracking_address(app, auth, client, delivered, view) -> None:
    mailing, recipient, data, name = delivered
    auth.login()
    before = _state(recipient.id, mailing.id)
    path = {
        "recipient": f"/mailings/{mailing.id}/recipients/{recipient.id}",
        "fragment": f"/mailings/recipients/{recipient.id}/_message",
        "contact": f"/contacts/{recipient.contact_id}",
        "captured": f"/captured/{name}",
        "preview": f"/mailings/{mailing.id}/preview?contact=user1@example.org",
    }[view]
    response = client.get(path)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert TRACKING.findall(_outside_raw_source(page)) == []
    if view == "contact":
        # The history loads the message from the fragment above; the page itself links to it.
        assert f'hx-get="/mailings/recipients/{recipient.id}/_message"' in page
    else:
        [srcdoc] = _srcdocs(page)
        assert "Hello User 1" in srcdoc
        assert '<a href="https://example.org/offer?a=1&amp;b=2"' in srcdoc  # the real target
        assert "<img" not in srcdoc
    if view in ("recipient", "fragment", "captured"):
        # The source listing is still the message byte for byte.
        [raw] = re.findall(r'data-testid="raw-(?:message|source)">(.*?)</pre>', page, flags=re.S)
        assert html.unescape(raw).encode() == data
    assert _state(recipient.id, mailing.id) == before


def test_text_part_of_a_captured_message_shows_targets(app, auth, client, delivered) -> None:
    mailing, recipient, _, _ = delivered
    link = db.session.execute(select(TrackedLink).where(TrackedLink.mailing_id == mailing.id)
                              ).scalars().first()
    token = recipient_token(recipient.id)
    raw = (
        "From: news@shop.example\r\nTo: user1@example.org\r\nSubject: Text only\r\n"
        f"X-Sendboard-Rid: {token}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Offer: http://127.0.0.1:5000/t/c/{token}/{link.id}\r\n"
        f"Other: http://127.0.0.1:5000/t/c/{token}/999999\r\n"
    ).encode()
    box = Path(app.config.get("CAPTURE_DIR") or Path(app.config["INSTANCE_DIR"]) / "capture")
    writer = MaildirWriter(box)
    name = writer.store(raw, "bounce@bounces.test", ["user1@example.org"]).file
    writer.close()
    auth.login()
    page = client.get(f"/captured/{name}").get_data(as_text=True)
    text = html.unescape(re.search(r'<section id="text">.*?<pre class="message">(.*?)</pre>',
                                   page, re.S).group(1))
    assert text.replace("\r\n", "\n") == f"Offer: {OFFER}\nOther: [tracked link]\n"
    assert TRACKING.findall(_outside_raw_source(page)) == []


def test_test_send_carries_no_recipient_token(app, auth, client, delivered, smtp) -> None:  # noqa: F811
    mailing, recipient, _, _ = delivered
    auth.login()
    before = _state(recipient.id, mailing.id)
    response = client.post(f"/mailings/{mailing.id}/test-send", data={})
    assert response.status_code == 302
    [message] = [m for m in smtp.handler.messages if m.rcpt == ["staff@example.org"]]
    decoded = quopri.decodestring(message.data).decode()
    assert "[Test] Hi" in decoded
    assert "/t/c/" not in decoded  # links go straight to their targets
    tokens = re.findall(r"/t/o/([^\"'\s]+)", decoded)
    assert tokens and all(read_recipient_token(t) is None for t in tokens)
    auth.logout()
    for token in tokens:  # the staff member's mail client loads the pixel: nothing counts
        assert client.get(f"/t/o/{token}").status_code == 200
    assert _state(recipient.id, mailing.id) == before


def _link(mailing: Mailing) -> TrackedLink:
    return db.session.execute(select(TrackedLink).where(TrackedLink.mailing_id == mailing.id)
                              ).scalars().one()


def test_pixel_and_click_from_staff_answer_but_count_nothing(app, auth, client, delivered) -> None:
    mailing, recipient, _, _ = delivered
    link = _link(mailing)
    token = recipient_token(recipient.id)
    auth.login()
    before = _state(recipient.id, mailing.id)
    pixel = client.get(f"/t/o/{token}", headers={"User-Agent": "Mozilla/5.0 Firefox/128"})
    assert pixel.status_code == 200 and pixel.mimetype == "image/gif"
    clicked = client.get(f"/t/c/{token}/{link.id}", headers={"User-Agent": "Mozilla/5.0 Firefox/128"})
    assert clicked.status_code == 302 and clicked.headers["Location"] == OFFER
    assert client.head(f"/t/c/{token}/{link.id}").status_code == 302
    assert client.get(f"/u/{token}").status_code == 200  # the unsubscribe page only asks
    assert _state(recipient.id, mailing.id) == before
    assert db.session.get(TrackedLink, link.id).clicks == 0


def test_the_same_requests_signed_out_do_count(app, auth, client, delivered) -> None:
    mailing, recipient, _, _ = delivered
    link = _link(mailing)
    token = recipient_token(recipient.id)
    recipient.handed_off_at = datetime.now(UTC) - timedelta(hours=1)  # a reader, not a prefetch
    db.session.commit()
    auth.login()
    auth.logout()
    before = totals.get(mailing.id)
    agent = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Thunderbird/128"}
    assert client.get(f"/t/o/{token}", headers=agent).status_code == 200
    assert client.get(f"/t/c/{token}/{link.id}", headers=agent).status_code == 302
    db.session.expire_all()
    row = db.session.get(Recipient, recipient.id)
    assert (row.response, row.opens, row.clicks) == ("clicked", 1, 1)
    after = totals.get(mailing.id)
    assert after.get("opened_unique", 0) == before.get("opened_unique", 0) + 1
    assert after.get("clicked_unique", 0) == before.get("clicked_unique", 0) + 1

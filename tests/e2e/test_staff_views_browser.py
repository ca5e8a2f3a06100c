"""Staff never create recipient activity, in a real browser: the recipient page, the contact's
history, the captured message and the preview each show a Delivered recipient's message, images
and all, and afterwards the recipient is still Delivered and the mailing's counters have not moved.

The mailing is frozen with the live server's address, so its open pixel and tracked links really
point at this server; a final control shows that the message as sent, put in a sandboxed iframe
by a reader, does register an open.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.e2e

TRACKING = re.compile(r"/t/[oc]/")


def _html(base: str) -> str:
    return (
        "<html><body><p>Hello {{ name }}</p>"
        f'<img src="{base}/static/css/dashboard.css?probe=1" width="1" height="1" alt="">'
        '<p><a href="https://example.org/offer?a=1&amp;b=2">Offer</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    )


def _sent_mailing(deployment: Any) -> dict[str, Any]:
    """A mailing to two contacts, frozen in this process with the live server's address and sent
    by the worker process; the first recipient Delivered and its message in the capture box."""
    import time

    from sqlalchemy import select

    from app.extensions import db
    from app.models import Contact, ContactList, ListMember, Mailing, Recipient
    from app.runtime.capture import MaildirWriter
    from app.services import history, mailings
    from app.services.responses import apply_event
    from jobs.enqueue import kick_sending

    app = deployment.app
    app.config["BASE_URL"] = deployment.url
    with app.app_context():
        lst = ContactList(name="Readers")
        db.session.add(lst)
        db.session.flush()
        for i in range(2):
            contact = Contact(email=f"reader{i}@example.org", email_key=f"reader{i}@example.org",
                              name=f"Reader {i}", last_transaction_at=datetime.now(UTC))
            db.session.add(contact)
            db.session.flush()
            db.session.add(ListMember(list_id=lst.id, contact_id=contact.id))
        db.session.commit()
        mailing = mailings.create(owner_id=None, name="Quiet look", list_ids=[lst.id],
                                  subject="News for {{ name }}", from_name="Shop",
                                  from_address="news@shop.example", html_body=_html(deployment.url),
                                  text_body="Hello {{ name }}\n")
        # Preparing and prepared in one transaction, so the worker's scheduler never sees it
        # half way (it would freeze it with its own address).
        mailing.status = "preparing"
        assert mailings.prepare(mailing.id) is not None
        kick_sending()
        mailing_id = mailing.id
        deadline = time.monotonic() + 30
        while True:
            db.session.expire_all()
            rows = db.session.execute(select(Recipient).where(Recipient.mailing_id == mailing_id)
                                      .order_by(Recipient.id)).scalars().all()
            if rows and all(r.handed_off_at is not None for r in rows):
                break
            assert time.monotonic() < deadline, "the worker did not send the mailing"
            time.sleep(0.2)
        recipient = rows[0]
        apply_event(recipient.id, kind="delivered", source="webhook",
                    occurred_at=datetime.now(UTC) - timedelta(minutes=30))
        recipient.handed_off_at = datetime.now(UTC) - timedelta(hours=1)  # a reader, later on
        db.session.commit()
        data = history.rebuild_message(recipient)
        assert data is not None and f"{deployment.url}/t/o/".encode() in data.replace(b"=\r\n", b"")
        writer = MaildirWriter(Path(deployment.tmp) / "capture")
        name = writer.store(data, "bounce@bounces.test", [recipient.address]).file
        writer.close()
        assert db.session.get(Mailing, mailing_id).status in ("sending", "sent")
        return {"mailing": mailing_id, "recipient": recipient.id, "contact": recipient.contact_id,
                "address": recipient.address, "captured": name,
                "html": _raw_html(data)}


def _raw_html(data: bytes) -> str:
    import email
    from email import policy

    message = email.message_from_bytes(data, policy=policy.default)
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def _state(deployment: Any, ids: dict[str, Any]) -> tuple[Any, ...]:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import Recipient, ResponseEvent, TrackedLink
    from app.services import totals

    with deployment.app.app_context():
        r = db.session.get(Recipient, ids["recipient"])
        events = db.session.scalar(select(func.count()).select_from(ResponseEvent))
        clicks = db.session.scalar(select(func.sum(TrackedLink.clicks)))
        counters = totals.get(ids["mailing"])
        return (r.response, r.opens, r.clicks, events, clicks,
                {k: v for k, v in counters.items() if k.startswith(("open", "click", "response:"))})


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill("admin@example.org")
    page.get_by_label("Password").fill("browser-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Mailings")).to_be_visible()


def _message_frame_loaded(page: Page, frame_selector: str) -> None:
    frame = page.frame_locator(frame_selector).last
    expect(frame.locator("body")).to_contain_text("Hello Reader 0")
    expect(frame.get_by_role("link", name="Offer")).to_have_attribute(
        "href", "https://example.org/offer?a=1&b=2")
    page.wait_for_load_state("load")
    page.wait_for_load_state("networkidle")


def test_staff_views_count_nothing_in_a_browser(deployment, page: Page, browser: Browser) -> None:
    base = deployment.url
    page.set_default_timeout(20_000)
    ids = _sent_mailing(deployment)
    requests: list[str] = []  # what the page asked for (Playwright does not see the sandboxed
    page.on("request", lambda request: requests.append(request.url))  # frames' requests)
    served: list[str] = []  # every request the server answered, whoever made it
    inner = deployment.app.wsgi_app

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        served.append(environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", ""))
        return inner(environ, start_response)

    deployment.app.wsgi_app = recording
    page.route("https://example.org/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<p>The offer itself</p>"))
    _sign_in(page, base)
    before = _state(deployment, ids)
    assert before[0] == "delivered" and before[1:3] == (0, 0)

    # The recipient page: the message as received, in its sandboxed iframe.
    page.goto(f"{base}/mailings/{ids['mailing']}/recipients/{ids['recipient']}")
    _message_frame_loaded(page, "iframe.preview-frame")
    # A link in it goes straight to its target, not through the click redirect.
    page.frame_locator("iframe.preview-frame").last.get_by_role("link", name="Offer").click()
    expect(page.frame_locator("iframe.preview-frame").last.locator("body")).to_contain_text(
        "The offer itself")

    # The contact's history: the message loads when its row is opened.
    page.goto(f"{base}/contacts/{ids['contact']}")
    history = page.locator("#history")
    history.locator("summary", has_text="Timeline and message").first.click()
    _message_frame_loaded(page, "#history iframe.preview-frame")

    # The captured message.
    page.goto(f"{base}/captured/{ids['captured']}")
    _message_frame_loaded(page, "#html iframe")

    # The preview for that contact.
    page.goto(f"{base}/mailings/{ids['mailing']}/preview?contact={ids['address']}")
    _message_frame_loaded(page, "iframe.preview-frame")

    probes = [u for u in served if "probe=1" in u]
    assert len(probes) >= 4, served  # images in the messages did load, in every view
    assert [u for u in served + requests if TRACKING.search(u)] == []
    assert any(u.startswith("https://example.org/offer?a=1&b=2") for u in requests)
    assert _state(deployment, ids) == before

    # Control: the message as sent, in a sandboxed iframe of a reader's page, registers an open.
    reader = browser.new_context()
    try:
        reader_page = reader.new_page()
        reader_page.goto(f"{base}/login")
        reader_page.set_content(
            f'<iframe sandbox srcdoc="{html.escape(ids["html"], quote=True)}"></iframe>')
        expect(reader_page.frame_locator("iframe").locator("body")).to_contain_text("Hello Reader 0")
        reader_page.wait_for_load_state("networkidle")
        assert [u for u in served if u.startswith("/t/o/")]
    finally:
        reader.close()
    after = _state(deployment, ids)
    assert after[0] == "opened" and after[1] == 1

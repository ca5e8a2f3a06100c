"""A/B test and send window in a real browser: set up two subject variants and a window in the
editor, send, watch the mailing page show each variant's figures, pick the winner by hand and see
the rest of the audience receive it; no Content Security Policy violation on the way."""

from __future__ import annotations

import email
import re
import time
from email.header import decode_header, make_header

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

CONTACTS = 40


def _subject(raw: bytes) -> str:
    return str(make_header(decode_header(email.message_from_bytes(raw)["Subject"])))


def _setup(deployment) -> int:
    from app.extensions import db
    from app.models import Contact, ContactList, ListMember
    from app.services import mailings

    with deployment.app.app_context():
        lst = ContactList(name="Testers")
        db.session.add(lst)
        db.session.flush()
        for i in range(CONTACTS):
            c = Contact(email=f"t{i:02d}@example.org", email_key=f"t{i:02d}@example.org",
                        name=f"T {i}")
            db.session.add(c)
            db.session.flush()
            db.session.add(ListMember(list_id=lst.id, contact_id=c.id))
        db.session.commit()
        mailing = mailings.create(
            owner_id=None, name="Winter offer", list_ids=[lst.id], subject="Winter offer",
            from_name="Shop", from_address="news@shop.example",
            html_body='<p>Hi {{ name }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
            text_body="Hi {{ name }}\nUnsubscribe: {{ unsubscribe_url }}\n")
        mailing_id = mailing.id
        db.session.remove()
    return mailing_id


def _wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_ab_test_and_window_journey(deployment, page: Page) -> None:
    base = deployment.url
    mailing_id = _setup(deployment)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_default_timeout(30_000)
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill("admin@example.org")
    page.get_by_label("Password").fill("browser-password")
    page.get_by_role("button", name="Sign in").click()

    # The editor: two variants, 50% test, winner by opens after 2 hours; a window all week.
    page.goto(f"{base}/mailings/{mailing_id}/edit")
    section = page.locator("#ab-window")
    expect(section).to_contain_text("A/B test and send window")
    expect(page.locator("#ab-subject-0")).to_have_value("Winter offer")
    page.check("#ab-on")
    page.fill("#ab-subject-0", "Winter offer for {{ name }}")
    page.fill("#ab-subject-1", "Only this week, {{ name }}")
    page.fill("#ab-from-1", "Shop team")
    page.fill("#ab-share", "50")
    page.fill("#ab-wait", "120")
    page.select_option("#ab-metric", "open")
    page.check("#win-on")
    page.fill("#win-start", "00:00")
    page.fill("#win-end", "24:00")
    for day in range(7):
        page.check(f"#win-day-{day}")
    deployment.screenshot(page, "ab-window-editor.png")
    page.get_by_role("button", name="Save A/B test and window").click()
    expect(page.locator(".flash-success")).to_contain_text("A/B test and send window saved.")
    expect(page.locator("#ab-subject-1")).to_have_value("Only this week, {{ name }}")
    expect(page.locator("#ab-from-1")).to_have_value("Shop team")
    expect(page.locator("#win-end")).to_have_value("24:00")
    expect(page.locator("#ab-on")).to_be_checked()

    # A bad window is refused with the reason, and nothing changes.
    page.fill("#win-start", "25:00")
    page.get_by_role("button", name="Save A/B test and window").click()
    expect(page.locator(".flash-error")).to_contain_text("not a time of day")
    expect(page.locator("#win-start")).to_have_value("00:00")

    # Send: the test half goes out, the rest is held for the winner.
    page.goto(f"{base}/mailings/{mailing_id}")
    page.get_by_role("button", name="Send now").click()
    _wait_for(lambda: len(deployment.smtp.handler.messages) >= CONTACTS // 2)
    time.sleep(1.0)
    assert len(deployment.smtp.handler.messages) == CONTACTS // 2
    page.goto(f"{base}/mailings/{mailing_id}")
    figures = page.locator("#ab-figures")
    expect(figures).to_be_visible()
    expect(page.locator("#ab-row-A td").nth(4)).to_have_text("10")  # sent
    expect(page.locator("#ab-row-B td").nth(4)).to_have_text("10")
    expect(page.locator("#ab-row-B")).to_contain_text("Shop team")
    expect(page.locator("#ab-held")).to_contain_text("20 held for the winner")
    expect(page.locator("#ab-test")).to_contain_text("00:00-24:00, every day")
    deployment.screenshot(page, "ab-test-mailing.png")

    # Staff pick B before the wait is over; the remainder gets B.
    page.get_by_role("button", name="Pick B as winner").click()
    expect(page.locator(".flash-success")).to_contain_text("Variant B wins")
    expect(page.locator("#ab-winner")).to_contain_text("Winner: variant B")
    _wait_for(lambda: len(deployment.smtp.handler.messages) >= CONTACTS)
    messages = deployment.smtp.handler.messages
    assert len({m.rcpt[0] for m in messages}) == CONTACTS
    subjects = [_subject(m.data) for m in messages]
    assert sum(1 for s in subjects if s.startswith("Winter offer for")) == 10
    assert sum(1 for s in subjects if s.startswith("Only this week,")) == 30
    page.reload()
    expect(page.locator("#status-badge")).to_have_text(re.compile("Sent|Sending"))
    expect(page.locator("#ab-row-B")).to_contain_text("(winner)")
    expect(page.locator("#ab-row-B td").nth(4)).to_have_text("10")  # the test group only
    assert violations == []

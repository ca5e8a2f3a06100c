"""The whole staff journey in a real browser: sign in, import contacts, write and send a mailing,
watch its progress update without a reload, cancel a slow mailing mid-send and see who was not
sent, then open a contact's history and the exact message they received.

Screenshots of the main pages are saved to docs/screenshots/ along the way.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

CONTACTS = 120


def _csv() -> bytes:
    lines = ["email,name,city"] + [f"client{i:03d}@example.org,Client {i},Brno"
                                   for i in range(CONTACTS)]
    return ("\n".join(lines) + "\n").encode()


def _percent(page: Page) -> float:
    text = page.get_by_test_id("percent").inner_text()
    return float(re.match(r"([\d.]+)", text).group(1))


def test_staff_journey(deployment, page: Page) -> None:
    base = deployment.url
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_default_timeout(30_000)

    # Sign in.
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill("admin@example.org")
    page.get_by_label("Password").fill("browser-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Mailings")).to_be_visible()

    # Import contacts through the upload page; the worker process imports them.
    page.goto(f"{base}/contacts/upload")
    page.set_input_files("#u-file", files=[{"name": "clients.csv", "mimeType": "text/csv",
                                            "buffer": _csv()}])
    page.fill("#u-list", "Clients")
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-progress .badge")).to_have_text("done")
    expect(page.locator("#import-progress")).to_contain_text(f"{CONTACTS}")

    # Write a mailing: the audience count comes live from the server.
    page.goto(f"{base}/mailings")
    expect(page.get_by_text("Nothing is sending right now.")).to_be_visible()
    page.get_by_role("link", name="New mailing").click()
    page.fill("#f-name", "Spring news")
    page.get_by_label("Subject", exact=True).fill("Spring is here, {{ name }}")
    page.get_by_label("From name", exact=True).fill("Shop")
    page.get_by_label("From address", exact=True).fill("news@shop.example")
    page.get_by_role("checkbox", name=re.compile("Clients")).check()
    expect(page.get_by_test_id("eligible")).to_have_text(str(CONTACTS))
    deployment.screenshot(page, "editor.png")
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator(".flash-success")).to_contain_text("Mailing saved as a draft.")
    expect(page.locator("#preview")).to_contain_text("Shown with sample data")

    # Send it slowly enough to watch: progress moves while the page is never reloaded.
    deployment.smtp.handler.delay = 0.06
    page.get_by_role("link", name="Mailing page").click()
    page.get_by_role("button", name="Send now").click()
    expect(page.locator("#status-badge")).to_have_text(re.compile("Preparing|Sending"))
    page.evaluate("window.__notReloaded = true")
    expect(page.get_by_test_id("percent")).to_be_visible()
    first = _percent(page)
    page.wait_for_function("() => /([1-9]\\d*\\.\\d) % sent/.test("
                           "document.querySelector('[data-testid=percent]').textContent) && "
                           "!document.querySelector('[data-testid=percent]').textContent"
                           ".startsWith('100')")
    middle = _percent(page)
    assert 0 < middle < 100 and middle >= first
    expect(page.get_by_test_id("percent")).to_have_text("100.0 % sent", timeout=60_000)
    expect(page.locator("#status-badge")).to_have_text("Sent")
    assert page.evaluate("window.__notReloaded") is True  # updated by polling alone
    # Once sent the poll slows down: responses may still arrive for a week.
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 30s")
    page.reload()
    expect(page.locator("#delivery-chart .main-svg").first).to_be_attached()
    expect(page.frame_locator("iframe.preview-frame").first.locator("body")).to_contain_text(
        "Hello {{ name }}")
    deployment.screenshot(page, "mailing.png", full_page=False)
    assert len(deployment.smtp.handler.messages) == CONTACTS

    # A second, slow mailing: cancel it mid-send and see the recipients not sent.
    page.get_by_role("button", name="Copy").click()
    page.fill("#f-name", "Slow reminder")
    page.get_by_role("button", name="Save draft").click()
    deployment.smtp.handler.delay = 0.25
    page.get_by_role("link", name="Mailing page").click()
    page.get_by_role("button", name="Send now").click()
    page.wait_for_function("() => { const p = document.querySelector('[data-testid=percent]');"
                           " return p && parseFloat(p.textContent) > 0; }")
    page.goto(f"{base}/mailings")
    current = page.locator("#current")
    expect(current).to_contain_text("Slow reminder")
    expect(current.locator(".badge.sending")).to_be_visible()
    deployment.screenshot(page, "mailings.png")
    current.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash-success")).to_contain_text("Mailing canceled.")
    page.get_by_role("link", name="Slow reminder").first.click()
    expect(page.locator("#status-badge")).to_have_text("Canceled")
    expect(page.get_by_test_id("not-sent-note")).to_contain_text("recipients were not sent")
    expect(page.locator(".tabs a[aria-current=page]")).to_contain_text("Not sent")
    canceled = page.locator("#audience .resp-canceled")
    expect(canceled.first).to_be_visible()
    assert canceled.count() > 0
    expect(page.get_by_test_id("status-reason")).to_contain_text("canceled by staff")
    sent_slow = sum(1 for m in deployment.smtp.handler.messages
                    if b"Spring is here" in m.data) - CONTACTS
    assert 0 < sent_slow < CONTACTS

    # A recipient's history and the message they received.
    page.locator("#audience a", has_text="contact").first.click()
    history = page.locator("#history")
    expect(history).to_contain_text("Spring news")
    expect(history).to_contain_text("Slow reminder")
    summary = history.locator("summary", has_text="Timeline and message").last
    summary.click()
    expect(history.locator("ol.timeline").last).to_contain_text("Handed off to the provider")
    raw = history.get_by_test_id("raw-message").last
    expect(raw).to_contain_text("Subject: Spring is here, Client")
    frame = history.locator("iframe.preview-frame").last
    expect(frame).to_have_attribute("sandbox", "")
    expect(history.frame_locator("iframe.preview-frame").last.locator("body")).to_contain_text(
        "Hello Client")
    history.locator("h2").scroll_into_view_if_needed()
    page.evaluate("document.getElementById('history').scrollIntoView()")
    deployment.screenshot(page, "contact.png", full_page=False)

"""The home page and one-click resend in a real browser: the home page shows a mailing sending
(with its progress and Cancel) and an interrupted one (with its reason and Resume), and the last
mailings' rates drawn by Plotly under the content security policy; "Send again to non-openers"
on a sent mailing creates a draft whose audience is exactly the people who did not open it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

HTML = ('<p>Hello {{ name }}</p><p><a href="https://example.org/sale">Sale</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')
TEXT = "Hello {{ name }}\nUnsubscribe: {{ unsubscribe_url }}\n"
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective));
"""


def _seed(deployment: Any) -> dict[str, int]:
    from app.domain.lifecycle import Status
    from app.extensions import db
    from app.models import Contact, ContactList, ListMember, Recipient
    from app.services import mailings, totals
    from app.services.users import create_user, find_user
    from jobs.enqueue import kick_sending

    app = deployment.app
    with app.app_context():
        if find_user("admin@example.org") is None:  # the user services leave commits to callers
            create_user(email="admin@example.org", password="browser-password", name="Ada Admin",
                        role="admin")
        lst = ContactList(name="Shoppers")
        db.session.add(lst)
        db.session.flush()
        contacts = []
        for i in range(40):
            c = Contact(email=f"shopper{i}@example.org", email_key=f"shopper{i}@example.org",
                        name=f"Shopper {i}", last_transaction_at=datetime.now(UTC))
            db.session.add(c)
            db.session.flush()
            db.session.add(ListMember(list_id=lst.id, contact_id=c.id))
            contacts.append(c)
        db.session.commit()
        content = {"subject": "Sale", "from_address": "news@shop.example", "html_body": HTML,
                   "text_body": TEXT}

        # Sent earlier: 5 recipients, 2 of whom opened (one of them only through a proxy).
        sent = mailings.create(owner_id=None, name="Spring sale", **content)
        sent.status = Status.SENT.value
        sent.started_at = sent.finished_at = datetime.now(UTC)
        for i, (response, opens, machine) in enumerate([
                ("opened", 1, 0), ("opened", 1, 1), ("delivered", 0, 0), ("clicked", 2, 0),
                ("delivered", 0, 0)]):
            db.session.add(Recipient(mailing_id=sent.id, contact_id=contacts[i].id,
                                     address=contacts[i].email, response=response, opens=opens,
                                     machine_opens=machine, handed_off_at=datetime.now(UTC)))
        totals.bump(sent.id, {"recipients": 5, "eligible": 5, "response:opened": 2,
                              "response:delivered": 2, "response:clicked": 1,
                              "opened_unique_human": 2, "clicked_unique_human": 1})

        # Interrupted: its remaining recipients wait for a resume.
        paused = mailings.create(owner_id=None, name="Paused promo", **content)
        paused.status = Status.INTERRUPTED.value
        paused.status_reason = "bounce rate 12.0% passed the 10.0% limit after 200 messages"
        paused.started_at = paused.interrupted_at = datetime.now(UTC)
        for c in contacts[:7]:
            db.session.add(Recipient(mailing_id=paused.id, contact_id=c.id, address=c.email,
                                     response="planned"))
        db.session.commit()

        # Sending, slowly enough to be seen on the home page.
        slow = mailings.create(owner_id=None, name="Slow news", list_ids=[lst.id], **content)
        slow.status = Status.PREPARING.value
        db.session.commit()
        assert mailings.prepare(slow.id) is not None
        kick_sending()
        ids = {"sent": sent.id, "paused": paused.id, "slow": slow.id}
        db.session.remove()
    return ids


def test_home_shows_sending_and_interrupted_and_resend_makes_the_right_draft(deployment,
                                                                              page: Page) -> None:
    base = deployment.url
    deployment.smtp.handler.delay = 0.4
    ids = _seed(deployment)
    page.set_default_timeout(20_000)
    expect.set_options(timeout=15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.add_init_script(WATCH)
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill("admin@example.org")
    page.get_by_label("Password").fill("browser-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Mailings")).to_be_visible()

    page.goto(f"{base}/home")
    sending = page.locator("#home-sending")
    expect(sending).to_contain_text("Slow news")
    expect(sending.get_by_test_id("home-percent")).to_contain_text("% sent")
    expect(sending.get_by_role("button", name="Cancel")).to_be_visible()
    interrupted = page.locator("#home-interrupted")
    expect(interrupted).to_contain_text("Paused promo")
    expect(interrupted).to_contain_text("Bounce rate too high")
    expect(interrupted.get_by_test_id("interrupted-reason")).to_contain_text(
        "bounce rate 12.0% passed the 10.0% limit")
    expect(interrupted.locator("tr", has_text="Paused promo")).to_contain_text("7")
    expect(interrupted.get_by_role("button", name="Resume")).to_be_visible()
    expect(page.get_by_test_id("contacts-total")).to_have_text("40")
    expect(page.locator("#rates-chart .main-svg").first).to_be_attached()
    expect(page.get_by_test_id("rates-table")).to_contain_text("Spring sale")
    deployment.screenshot(page, "home.png")
    assert page.evaluate("window.__csp") == []

    # Cancel from the home page: back on the home page, nothing sending any more.
    sending.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash-success")).to_contain_text("Mailing canceled.")
    assert page.url.endswith("/home")
    expect(page.locator("#home-sending")).not_to_contain_text("Slow news", timeout=30_000)

    # Send again to non-openers: shopper1 (opened only through a proxy), shopper2, shopper4.
    page.goto(f"{base}/mailings/{ids['sent']}")
    page.get_by_label("Subject", exact=True).fill("Last chance: the sale ends")
    page.get_by_role("button", name="Send again to non-openers").click()
    expect(page.locator(".flash-success")).to_contain_text("Draft created for 3 people who did "
                                                           "not open it")
    expect(page.get_by_test_id("resend-of")).to_contain_text("Spring sale")
    expect(page.get_by_test_id("resend-size")).to_have_text("3")
    expect(page.get_by_test_id("resend-eligible")).to_have_text("3")
    expect(page.locator("h1")).to_have_text(re.compile("Spring sale .again to non-openers."))
    expect(page.locator("#status-badge")).to_have_text("Draft")
    expect(page.get_by_role("row", name=re.compile("Subject"))).to_contain_text(
        "Last chance: the sale ends")
    with deployment.app.app_context():
        from sqlalchemy import select

        from app.extensions import db
        from app.models import Mailing, Recipient

        again = db.session.execute(select(Mailing).where(Mailing.resend_of_id == ids["sent"])
                                   ).scalar_one()
        addresses = set(db.session.execute(
            select(Recipient.address).where(Recipient.mailing_id == again.id)).scalars())
        assert addresses == {"shopper1@example.org", "shopper2@example.org",
                             "shopper4@example.org"}
        db.session.remove()

"""The mailing page settles without a reload, in a real browser against a real worker:

- canceled while a batch is being handed off to a slow relay, the page shows the final figures
  (sent + canceled = audience, as in the database) once the batch is recorded;
- a finished mailing keeps refreshing slowly, so responses that arrive later (posted here to the
  real, signed /webhooks/generic endpoint) show up on the open page.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from app.domain import figures
from app.domain.lifecycle import Status

pytestmark = pytest.mark.e2e

FIGURES = """() => Object.fromEntries([...document.querySelectorAll('#live [data-figure]')]
  .map((el) => [el.dataset.figure, parseInt(el.textContent.replace(/[^0-9]/g, ''), 10)]))"""
TAB_COUNTS = """() => Object.fromEntries([...document.querySelectorAll('[id^=tab-count-]')]
  .map((el) => [el.id.slice(10), parseInt(el.textContent.replace(/[^0-9]/g, ''), 10)]))"""


def _by_response(app, mailing_id: int) -> dict[str, int]:
    from app.extensions import db
    from app.models import Recipient

    with app.app_context():
        rows = dict(db.session.execute(
            select(Recipient.response, func.count()).where(Recipient.mailing_id == mailing_id)
            .group_by(Recipient.response)).all())
        db.session.remove()
    return rows


def _status(app, mailing_id: int) -> str:
    from app.extensions import db
    from app.models import Mailing

    with app.app_context():
        status = db.session.get(Mailing, mailing_id).status
        db.session.remove()
    return status


def test_cancel_mid_batch_shows_the_final_figures_without_reload(deployment, page: Page,
                                                                  sign_in) -> None:
    from app.extensions import db
    from tests.factories import make_audience, make_mailing

    contacts = 60  # three batches of 20 (BATCH_SIZE in the deployment)
    with deployment.app.app_context():
        mailing_id = make_mailing([make_audience(contacts)]).id
        db.session.remove()
    deployment.smtp.handler.delay = 1.0  # a slow relay: a batch of 20 takes 20 s
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_default_timeout(30_000)
    sign_in(page, deployment.url)
    page.goto(f"{deployment.url}/mailings/{mailing_id}")
    page.get_by_role("button", name="Send now").click()
    expect(page.locator(".flash-success")).to_contain_text("Sending started.")
    # The audience tabs fill in with the polls (the page may have been drawn while preparing).
    expect(page.locator("#tab-count-all")).to_have_text(str(contacts), timeout=20_000)
    expect(page.locator("#audience tbody tr")).to_have_count(50, timeout=20_000)
    # % sent moves with each message: it shows progress long before the first batch of 20
    # (a third of the audience) is recorded.
    page.wait_for_function("() => { const p = document.querySelector('[data-testid=percent]');"
                           " return p && parseFloat(p.textContent) > 0; }")
    percent = float(page.get_by_test_id("percent").text_content().split()[0])
    assert 0 < percent < 100 * 20 / contacts

    page.get_by_role("button", name="Cancel").click()
    flash = page.locator(".flash-info")
    expect(flash).to_be_visible()
    said = flash.text_content()
    # Either the settled truth or that it is settling; never a number that is about to change.
    assert re.search(r"being recorded|\d+ sent, \d+ not sent", said), said
    if "being recorded" in said:
        expect(page.get_by_test_id("settling")).to_be_visible()
    page.evaluate("window.__notReloaded = true")

    # The batch is recorded once the sender stops; the page brings the final figures by itself.
    expect(page.locator("#status-badge")).to_have_text("Canceled")
    expect(page.get_by_test_id("settling")).to_have_count(0, timeout=30_000)
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 30s")
    assert page.evaluate("window.__notReloaded") is True
    assert _status(deployment.app, mailing_id) == Status.CANCELED.value
    in_db = _by_response(deployment.app, mailing_id)
    sent = sum(in_db.get(r.value, 0) for r in figures.SENT)
    not_sent = sum(in_db.get(r.value, 0) for r in figures.NOT_SENT)
    assert set(in_db) == {"sent", "canceled"} and sent + not_sent == contacts
    assert sent == len(deployment.smtp.handler.messages) and 0 < sent < 20
    shown = page.evaluate(FIGURES)
    assert (shown["sent"], shown["not_sent"], shown["audience"]) == (sent, not_sent, contacts)
    assert shown["split-waiting"] == 0 and shown["sent"] + shown["not_sent"] == shown["audience"]
    assert shown["reasons-total"] == not_sent
    tabs = page.evaluate(TAB_COUNTS)
    assert tabs["all"] == contacts and tabs["not_sent"] == not_sent
    expect(page.get_by_test_id("not-sent-note")).to_contain_text(
        f"{sent} sent; {not_sent} recipients were not sent")
    # The Not sent tab lists every canceled recipient (50 a page).
    expect(page.locator("#audience .resp-canceled")).to_have_count(min(not_sent, 50))


def _post_events(base: str, secret: str, events: list[dict]) -> dict:
    from app.webhooks.auth import generic_signature

    body = json.dumps({"events": events}).encode()
    stamp = str(int(time.time()))
    request = urllib.request.Request(
        f"{base}/webhooks/generic", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Sendboard-Timestamp": stamp,
                 "X-Sendboard-Signature": generic_signature(secret, stamp, body)})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_events_after_the_end_show_on_the_open_page(deployment, page: Page, sign_in) -> None:
    from app.extensions import db
    from app.models import Recipient
    from app.services import mailings
    from app.services.tokens import recipient_token
    from tests.factories import make_audience, make_mailing

    secret = "e2e-generic-secret"
    deployment.app.config["GENERIC_WEBHOOK_SECRET"] = secret
    with deployment.app.app_context():
        mailing = make_mailing([make_audience(6)])
        mailing_id = mailing.id
        mailings.send_now(mailing)
        db.session.remove()
    deadline = time.monotonic() + 30
    while _status(deployment.app, mailing_id) != Status.SENT.value:
        assert time.monotonic() < deadline, "the mailing was not sent"
        time.sleep(0.2)
    with deployment.app.app_context():
        ids = list(db.session.execute(select(Recipient.id).where(
            Recipient.mailing_id == mailing_id).order_by(Recipient.id)).scalars())
        tokens = [recipient_token(i, "browser-tests") for i in ids]
        db.session.remove()

    page.set_default_timeout(15_000)
    sign_in(page, deployment.url)
    page.goto(f"{deployment.url}/mailings/{mailing_id}")
    expect(page.locator("#status-badge")).to_have_text("Sent")
    # Finished, so it refreshes slowly, and says how fresh its figures are.
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 30s")
    expect(page.locator("[data-refreshed]")).to_contain_text(re.compile(r"updated \d+ s ago"))
    page.evaluate("window.__notReloaded = true")
    before = page.evaluate(FIGURES)
    assert before["openers_human"] == 0 and before["sent"] == 6

    now = int(time.time())
    answer = _post_events(deployment.url, secret, [
        {"event": "open", "timestamp": now, "rid": tokens[0], "id": "e1"},
        {"event": "open", "timestamp": now, "rid": tokens[0], "id": "e2"},
        {"event": "open", "timestamp": now, "rid": tokens[1], "id": "e3"},
        {"event": "open", "timestamp": now, "rid": tokens[2], "id": "e4", "machine": True},
        {"event": "click", "timestamp": now, "rid": tokens[1], "id": "e5",
         "url": "https://example.org/offer?a=1&b=2"},
        {"event": "hard_bounce", "timestamp": now, "rid": tokens[3], "id": "e6",
         "status": "5.1.1", "diagnostic": "550 5.1.1 no such user"},
    ])
    assert answer["received"] == 6 and answer["unmatched"] == 0, answer

    page.wait_for_function(
        "() => { const el = document.querySelector('[data-figure=openers_human]');"
        " return el && el.textContent.trim() === '2'; }", timeout=45_000)
    shown = page.evaluate(FIGURES)
    assert (shown["openers_human"], shown["openers"], shown["openers_machine_only"]) == (2, 3, 1)
    assert (shown["opens"], shown["opens_machine"], shown["clickers_human"]) == (4, 1, 1)
    assert shown["hard_bounce"] == 1 and shown["sent"] == 6  # a bounced message was sent
    tabs = page.evaluate(TAB_COUNTS)
    assert tabs["open"] == 2 and tabs["click"] == 1 and tabs["bounce"] == 1
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 30s")

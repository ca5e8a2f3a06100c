"""The mailing page's charts in a real browser: while a mailing sends, every poll redraws the
delivery and activity charts in place (same elements, no reload), the activity chart appears with
the first opens, and once the mailing is finished a poll leaves them final and polling slows down.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page, expect

from app.domain.lifecycle import Status
from app.domain.responses import LABELS, Response

pytestmark = pytest.mark.e2e

SENT = LABELS[Response.SENT]
OPENED = LABELS[Response.OPENED]
CLICKED = LABELS[Response.CLICKED]

# The plotted bars of the delivery chart (label -> recipients), read from the chart element.
BARS = """() => {
  const chart = document.getElementById("delivery-chart");
  if (!chart || !chart.data) return null;
  const bars = chart.data[0];
  return Object.fromEntries(bars.y.map((label, i) => [label, bars.x[i]]));
}"""
# Opens and clicks plotted by the activity chart, summed over the hours.
ACTIVITY = """() => {
  const chart = document.getElementById("activity-chart");
  if (!chart || !chart.data) return null;
  const sum = (trace) => trace.y.reduce((a, b) => a + b, 0);
  return Object.fromEntries(chart.data.map((trace) => [trace.name, sum(trace)]));
}"""
# Every Plotly.react call, by chart id: a poll with nothing new must not redraw.
COUNT_REDRAWS = """() => {
  window.__redraws = [];
  const react = Plotly.react;
  Plotly.react = function (chart, ...rest) {
    window.__redraws.push(chart.id);
    return react.call(this, chart, ...rest);
  };
}"""


def wait_for(page: Page, script: str, expected: object, timeout: float = 15) -> None:
    """Wait until the page script returns `expected` (the polls run every 2 s)."""
    deadline = time.monotonic() + timeout
    seen = page.evaluate(script)
    while seen != expected:
        assert time.monotonic() < deadline, f"still {seen!r}, expected {expected!r}"
        page.wait_for_timeout(200)
        seen = page.evaluate(script)


def hand_off(mailing_id: int, count: int) -> list[int]:
    """What the sender does for `count` Planned recipients: Sent to provider, counters moved."""
    from sqlalchemy import select, update

    from app.extensions import db
    from app.models import Recipient
    from app.services import totals

    ids = list(db.session.execute(
        select(Recipient.id).where(Recipient.mailing_id == mailing_id,
                                   Recipient.response == Response.PLANNED.value)
        .order_by(Recipient.id).limit(count)).scalars())
    db.session.execute(update(Recipient).where(Recipient.id.in_(ids))
                       .values(response=Response.SENT.value))
    totals.move(mailing_id, Response.PLANNED, Response.SENT, len(ids))
    totals.bump(mailing_id, {"handed_off": len(ids)})
    return ids


def test_charts_follow_the_counters_in_place_and_polling_stops(deployment, page: Page,
                                                                sign_in) -> None:
    from app.extensions import db
    from app.models import Mailing, utcnow
    from app.services import mailings
    from app.services.responses import apply_event
    from tests.factories import make_audience, make_mailing

    # The test plays the sender: with the worker gone, only the test changes the mailing.
    deployment.worker.terminate()
    deployment.worker.wait(timeout=10)
    with deployment.app.app_context():
        mailing = make_mailing([make_audience(12)])
        mailing_id = mailing.id
        mailing.status = Status.PREPARING.value
        db.session.commit()
        mailings.prepare(mailing_id)
        assert mailing.status == Status.SENDING.value
        db.session.remove()

    page.set_default_timeout(15_000)
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url)
            if request.url.endswith(f"/mailings/{mailing_id}/_live") else None)
    sign_in(page, deployment.url)
    page.goto(f"{deployment.url}/mailings/{mailing_id}")
    expect(page.locator("#status-badge")).to_have_text("Sending")
    expect(page.locator("#delivery-chart .main-svg").first).to_be_attached()
    assert page.evaluate(BARS) == {"Planned": 12}
    expect(page.locator("#activity-chart")).to_be_hidden()
    page.evaluate("() => { window.__notReloaded = true;"
                  " document.getElementById('delivery-chart').__sameElement = true; }")
    page.evaluate(COUNT_REDRAWS)

    # Polls that bring nothing new leave the charts alone.
    with page.expect_response(lambda r: r.url.endswith("/_live")):
        pass
    with page.expect_response(lambda r: r.url.endswith("/_live")):
        pass
    page.wait_for_timeout(300)
    assert page.evaluate("window.__redraws") == []

    # Five recipients handed off: the bars move on the next poll, in the same element.
    with deployment.app.app_context():
        sent = hand_off(mailing_id, 5)
        db.session.commit()
        db.session.remove()
    wait_for(page, BARS, {"Planned": 7, SENT: 5})
    assert page.evaluate("window.__redraws") == ["delivery-chart"]
    expect(page.locator("#activity-chart")).to_be_hidden()

    # The first opens and a click: the activity chart appears without a reload.
    with deployment.app.app_context():
        now = datetime.now(UTC)
        apply_event(sent[0], kind="open", source="tracking", occurred_at=now)
        apply_event(sent[1], kind="open", source="tracking", occurred_at=now)
        apply_event(sent[1], kind="click", source="tracking", occurred_at=now)
        db.session.commit()
        db.session.remove()
    expect(page.locator("#activity-chart")).to_be_visible()
    expect(page.locator("#activity-chart .main-svg").first).to_be_attached()
    wait_for(page, ACTIVITY, {"Opens": 2, "Clicks": 1})
    wait_for(page, BARS, {"Planned": 7, SENT: 3, OPENED: 1, CLICKED: 1})

    # The send ends with the last hand-offs in one commit: the next poll carries these bars and
    # slows down to every 30 s (responses may still arrive), so no poll follows within seconds.
    with deployment.app.app_context():
        hand_off(mailing_id, 7)
        db.session.execute(db.update(Mailing).where(Mailing.id == mailing_id)
                           .values(status=Status.SENT.value, finished_at=utcnow()))
        db.session.commit()
        db.session.remove()
    expect(page.locator("#status-badge")).to_have_text("Sent")
    wait_for(page, BARS, {SENT: 10, OPENED: 1, CLICKED: 1})
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 30s")
    polled = len(polls)
    page.wait_for_timeout(5_000)
    assert len(polls) == polled, "still polling fast after the mailing was sent"
    wait_for(page, BARS, {SENT: 10, OPENED: 1, CLICKED: 1}, timeout=0)
    wait_for(page, ACTIVITY, {"Opens": 2, "Clicks": 1}, timeout=0)
    assert page.evaluate("window.__notReloaded") is True
    assert page.evaluate("document.getElementById('delivery-chart').__sameElement") is True


def test_a_real_send_draws_its_progress(deployment, page: Page, sign_in) -> None:
    from app.extensions import db
    from tests.factories import make_audience, make_mailing

    contacts = 60  # three batches of 20 (BATCH_SIZE in the deployment)
    with deployment.app.app_context():
        mailing_id = make_mailing([make_audience(contacts)]).id
        db.session.remove()
    deployment.smtp.handler.delay = 0.15  # about 3 s a batch: a few polls see each one land
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_default_timeout(30_000)
    sign_in(page, deployment.url)
    page.goto(f"{deployment.url}/mailings/{mailing_id}")
    expect(page.locator("#charts")).to_have_count(0)  # a draft has nothing to chart
    page.get_by_role("button", name="Send now").click()
    expect(page.locator(".flash-success")).to_contain_text("Sending started.")
    page.wait_for_function("() => !!window.Plotly")
    page.evaluate("""(label) => {
      window.__notReloaded = true;
      window.__sentDrawn = [];
      const react = Plotly.react;
      Plotly.react = function (chart, data, ...rest) {
        if (chart.id === "delivery-chart") {
          const i = data[0].y.indexOf(label);
          window.__sentDrawn.push(i < 0 ? 0 : data[0].x[i]);
        }
        return react.call(this, chart, data, ...rest);
      };
    }""", SENT)
    expect(page.locator("#status-badge")).to_have_text("Sent", timeout=60_000)
    wait_for(page, BARS, {SENT: contacts})
    expect(page.locator("#delivery-chart")).to_be_visible()
    drawn = page.evaluate("window.__sentDrawn")
    assert any(0 < n < contacts for n in drawn), drawn  # seen mid-send, not only at the end
    assert drawn == sorted(drawn) and drawn[-1] == contacts
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", "every 2s")

"""The figures' definitions: three groups that partition every response, tabs that count what
they list, progress, pace, sending time and the polling policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain import figures
from app.domain.figures import NOT_SENT, SENT, TABS, WAITING, Figures, Only
from app.domain.lifecycle import Status
from app.domain.responses import Response


def test_every_response_is_in_exactly_one_group():
    groups = [set(WAITING), set(SENT), set(NOT_SENT)]
    assert set().union(*groups) == set(Response)
    assert sum(len(g) for g in groups) == len(Response)
    # Bounced and blocked mail was sent; a message that could not be built was not.
    for sent in (Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.BLOCKED, Response.DROPPED,
                 Response.SPAM, Response.UNKNOWN):
        assert figures.group(sent) == "sent"
    for not_sent in (Response.CANCELED, Response.EXPIRED, Response.DELIVERY_ERROR,
                     Response.DUPLICATE):
        assert figures.group(not_sent) == "not_sent"
    assert figures.group(Response.PLANNED) == "waiting"
    # Refused for now by the SMTP server: not sent yet, not final, waiting for its next attempt.
    assert figures.group(Response.DEFERRED) == "waiting"
    assert set(WAITING) == {Response.PLANNED, Response.DEFERRED}


def _figures(responses: dict[Response, int], **counters: int) -> Figures:
    raw = {figures.response_counter(r): n for r, n in responses.items()}
    raw.update(counters)
    return figures.figures(raw)


def test_groups_add_up_to_the_audience_and_reasons_to_not_sent():
    counts = {r: i + 1 for i, r in enumerate(Response)}
    f = _figures(counts, eligible=40)
    assert f.sent + f.not_sent + f.waiting == f.audience == sum(counts.values())
    assert sum(f.not_sent_by_reason.values()) == f.not_sent
    assert list(f.not_sent_by_reason) == list(NOT_SENT)
    assert set(f.sent_problems) <= set(SENT)
    assert f.tab_counts["all"] == f.audience and f.tab_counts["not_sent"] == f.not_sent
    assert f.tab_counts["bounce"] == f.soft_bounces + f.hard_bounces == f.bounced
    assert f.tab_counts["spam"] == f.blocked + f.complaints == f.blocked_or_spam
    assert f.tab_counts["dropped"] == f.dropped and f.tab_counts["unsubscribed"] == f.unsubscribed


def test_people_and_machines_are_apart():
    f = _figures({Response.SENT: 10}, opens=30, opens_machine=12, opened_unique=9,
                 opened_unique_human=6, clicks=5, clicks_machine=1, clicked_unique=4,
                 clicked_unique_human=3)
    assert (f.opens_human, f.openers_machine_only) == (18, 3)
    assert (f.clicks_human, f.clickers_machine_only) == (4, 1)
    assert f.tab_counts["open"] == 6 and f.tab_counts["click"] == 3
    assert f.open_rate == pytest.approx(0.6) and f.click_rate == pytest.approx(0.3)
    assert figures.figures({}).open_rate == 0.0


def test_the_people_tabs_cover_every_response_a_person_who_engaged_can_hold():
    by_key = figures.TAB_BY_KEY
    assert by_key["open"].only is Only.HUMAN_OPEN and by_key["click"].only is Only.HUMAN_CLICK
    # Opening moves Planned, Sent, Soft bounce and Delivered up: those never hold an opener.
    for low in (Response.PLANNED, Response.SENT, Response.SOFT_BOUNCE, Response.DELIVERED):
        assert low not in by_key["open"].responses
    assert {Response.OPENED, Response.CLICKED, Response.SPAM,
            Response.UNSUBSCRIBED} <= set(by_key["open"].responses)
    assert [t.key for t in TABS][-1] == "all"


def test_percent_sent_and_pace():
    assert figures.percent_sent(0, 0) == 0.0
    assert figures.percent_sent(1, 3) == pytest.approx(33.333, abs=0.01)
    assert figures.percent_sent(5, 3) == 100.0
    samples = [(100.0, 0), (110.0, 50), (160.0, 300)]
    assert figures.pace(samples, now=160.0) == pytest.approx(5.0)
    assert figures.pace(samples, now=169.0) == pytest.approx(5.0)  # the first sample aged out
    assert figures.pace(samples, now=230.0) is None  # one sample left in the window
    assert figures.pace([(1.0, 5), (9.0, 5)], now=9.0) is None  # no progress
    assert figures.time_left(300, 5.0) == timedelta(minutes=1)
    assert figures.time_left(300, None) is None and figures.time_left(0, 5.0) is None


def test_sending_time_leaves_out_interruptions():
    t0 = datetime(2030, 5, 1, 8, tzinfo=UTC)
    assert figures.sending_time(started=None, finished=None, now=t0) is None
    assert figures.sending_time(started=t0, finished=None,
                                now=t0 + timedelta(minutes=3)) == timedelta(minutes=3)
    # Interrupted after 10 min and still interrupted 2 h later: 10 min of sending.
    assert figures.sending_time(started=t0, finished=None, now=t0 + timedelta(hours=2),
                                interrupted_at=t0 + timedelta(minutes=10)) == timedelta(minutes=10)
    # Resumed after an hour, finished 20 min later.
    assert figures.sending_time(started=t0, finished=t0 + timedelta(minutes=90),
                                now=t0 + timedelta(days=1),
                                interrupted_seconds=3600) == timedelta(minutes=30)


@pytest.mark.parametrize("status,in_flight,ended_ago,expected", [
    (Status.DRAFT, False, None, None),
    (Status.SCHEDULED, False, None, None),
    (Status.PREPARING, False, None, figures.FAST_POLL),
    (Status.SENDING, False, None, figures.FAST_POLL),
    (Status.CANCELED, True, timedelta(seconds=1), figures.FAST_POLL),
    (Status.INTERRUPTED, True, timedelta(seconds=1), figures.FAST_POLL),
    (Status.CANCELED, False, timedelta(seconds=1), figures.SLOW_POLL),
    (Status.SENT, False, timedelta(days=6, hours=23), figures.SLOW_POLL),
    (Status.SENT, False, timedelta(days=7), None),
    (Status.SENT, False, None, None),
])
def test_polling_policy(status, in_flight, ended_ago, expected):
    now = datetime(2030, 5, 1, 8, tzinfo=UTC)
    ended = now - ended_ago if ended_ago is not None else None
    assert figures.poll_every(status, batches_in_flight=in_flight, ended_at=ended,
                              now=now) == expected

"""The backoff schedule of deferred recipients and the age at which they are given up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain import backoff


@pytest.mark.parametrize(("attempt", "minutes"), [
    (0, 1), (1, 1), (2, 5), (3, 15), (4, 60), (5, 60), (40, 60),
])
def test_delay_schedule(attempt: int, minutes: int) -> None:
    assert backoff.delay(attempt) == timedelta(minutes=minutes)


def test_the_unit_scales_the_schedule() -> None:
    assert backoff.delay(3, timedelta(seconds=1)) == timedelta(seconds=15)


def test_next_attempt_until_the_maximum_age() -> None:
    first = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    day = timedelta(hours=24)
    now = first + timedelta(minutes=6)
    assert backoff.next_attempt(attempt=2, first_deferred=first, now=now,
                                max_age=day) == now + timedelta(minutes=5)
    assert backoff.next_attempt(attempt=9, first_deferred=first, now=first + day,
                                max_age=day) is None
    assert backoff.next_attempt(attempt=9, first_deferred=first,
                                now=first + day - timedelta(seconds=1),
                                max_age=day) == first + day + timedelta(minutes=59, seconds=59)


def test_all_refused_for() -> None:
    assert backoff.all_refused_for(None, 100.0) == 0.0
    assert backoff.all_refused_for(40.0, 100.0) == 60.0
    assert backoff.all_refused_for(140.0, 100.0) == 0.0


@pytest.mark.parametrize(("code", "text", "slow"), [
    (421, "4.7.0 Too many connections, closing", True),
    (421, "Service not available", True),
    (451, "4.7.1 Sending rate exceeded, try later", True),
    (454, "4.7.0 Throttling failure: maximum sending rate exceeded", True),
    (450, "4.2.1 Too many messages from this sender, slow down", True),
    (451, "4.3.0 Temporary failure, try again later", False),
    (452, "4.2.2 Mailbox full", False),
    (451, "4.7.1 Greylisted, come back later", False),
    (550, "5.7.1 Rate limit exceeded", False),  # a refusal for good, not a pace
])
def test_is_slow_down(code: int, text: str, slow: bool) -> None:
    assert backoff.is_slow_down(code, text) is slow

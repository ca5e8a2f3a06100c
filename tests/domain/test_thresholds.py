"""Auto-interrupt thresholds, quota, progress and ETA (docs/ARCHITECTURE.md, "Sending and its invariants")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.thresholds import Thresholds, eta_seconds, interrupt_reason, progress, quota_left

LIMITS = Thresholds()


def test_defaults() -> None:
    assert LIMITS == Thresholds(bounce_rate=0.10, complaint_rate=0.005, min_sample=200)


# --- the minimum sample ----------------------------------------------------------------------

@pytest.mark.parametrize("handed_off", [0, 1, 3, 50, 199])
def test_below_the_minimum_sample_nothing_stops_the_mailing(handed_off: int) -> None:
    assert interrupt_reason(handed_off=handed_off, hard_bounces=handed_off, complaints=handed_off,
                            limits=LIMITS) is None


def test_at_the_minimum_sample_the_rates_are_judged() -> None:
    assert interrupt_reason(handed_off=200, hard_bounces=200, complaints=0, limits=LIMITS) is not None


@pytest.mark.parametrize("min_sample", [0, -5])
def test_a_zero_sample_never_divides_by_zero(min_sample: int) -> None:
    limits = Thresholds(min_sample=min_sample)
    assert interrupt_reason(handed_off=0, hard_bounces=0, complaints=0, limits=limits) is None
    assert interrupt_reason(handed_off=1, hard_bounces=1, complaints=0, limits=limits) is not None


# --- bounce and complaint rates --------------------------------------------------------------

@pytest.mark.parametrize(("handed_off", "hard_bounces", "stops"), [
    (200, 0, False),
    (200, 19, False),
    (200, 20, False),  # exactly 10%: at the limit, not past it
    (200, 21, True),  # 10.5%
    (1000, 100, False),
    (1000, 101, True),
    (10_000, 1001, True),
])
def test_bounce_rate(handed_off: int, hard_bounces: int, stops: bool) -> None:
    reason = interrupt_reason(handed_off=handed_off, hard_bounces=hard_bounces, complaints=0, limits=LIMITS)
    assert (reason is not None) is stops
    if reason is not None:
        assert reason.startswith("bounce rate ")
        assert "passed the 10.0% limit" in reason
        assert f"after {handed_off:,} messages" in reason


def test_bounce_reason_text() -> None:
    assert interrupt_reason(handed_off=200, hard_bounces=21, complaints=0, limits=LIMITS) == (
        "bounce rate 10.5% passed the 10.0% limit after 200 messages")
    assert interrupt_reason(handed_off=10_000, hard_bounces=1001, complaints=0, limits=LIMITS) == (
        "bounce rate 10.0% passed the 10.0% limit after 10,000 messages")


@pytest.mark.parametrize(("handed_off", "complaints", "stops"), [
    (200, 0, False),
    (200, 1, False),  # exactly 0.5%
    (200, 2, True),  # 1%
    (1000, 5, False),
    (1000, 6, True),
    (100_000, 500, False),
    (100_000, 501, True),
])
def test_complaint_rate(handed_off: int, complaints: int, stops: bool) -> None:
    reason = interrupt_reason(handed_off=handed_off, hard_bounces=0, complaints=complaints, limits=LIMITS)
    assert (reason is not None) is stops
    if reason is not None:
        assert reason.startswith("complaint rate ") and "passed the 0.50% limit" in reason
        assert f"after {handed_off:,} messages" in reason


def test_complaint_reason_text() -> None:
    assert interrupt_reason(handed_off=1000, hard_bounces=0, complaints=6, limits=LIMITS) == (
        "complaint rate 0.60% passed the 0.50% limit after 1,000 messages")


def test_the_bounce_rate_is_reported_first_when_both_are_passed() -> None:
    reason = interrupt_reason(handed_off=1000, hard_bounces=500, complaints=500, limits=LIMITS)
    assert reason is not None and reason.startswith("bounce rate")


def test_custom_limits() -> None:
    limits = Thresholds(bounce_rate=0.02, complaint_rate=0.001, min_sample=10)
    assert interrupt_reason(handed_off=100, hard_bounces=2, complaints=0, limits=limits) is None
    assert interrupt_reason(handed_off=100, hard_bounces=3, complaints=0, limits=limits) is not None
    assert interrupt_reason(handed_off=1000, hard_bounces=0, complaints=2, limits=limits) is not None
    assert interrupt_reason(handed_off=9, hard_bounces=9, complaints=9, limits=limits) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**6).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(0, n))))
def test_a_reason_exactly_when_a_rate_is_past_its_limit(counts: tuple[int, int, int]) -> None:
    handed_off, bounces, complaints = counts
    reason = interrupt_reason(handed_off=handed_off, hard_bounces=bounces, complaints=complaints, limits=LIMITS)
    past = handed_off >= 200 and (bounces / handed_off > 0.10 or complaints / handed_off > 0.005)
    assert (reason is not None) is past


# --- quota -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("quota", "used", "left"), [
    (None, 0, None),
    (None, 10**9, None),
    (1000, 0, 1000),
    (1000, 999, 1),
    (1000, 1000, 0),
    (1000, 1500, 0),  # never negative
    (0, 0, 0),
])
def test_quota_left(quota: int | None, used: int, left: int | None) -> None:
    assert quota_left(quota=quota, used_this_month=used) == left


# --- progress --------------------------------------------------------------------------------

@pytest.mark.parametrize(("handed_off", "eligible", "percent"), [
    (0, 0, 100.0),  # an empty audience is complete
    (0, 10, 0.0),
    (1, 4, 25.0),
    (5, 10, 50.0),
    (10, 10, 100.0),
    (12, 10, 100.0),  # never past 100
    (-3, 10, 0.0),  # never below 0
    (0, -1, 100.0),
])
def test_progress(handed_off: int, eligible: int, percent: float) -> None:
    assert progress(handed_off=handed_off, eligible=eligible) == pytest.approx(percent)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-10, max_value=10**7), st.integers(min_value=-10, max_value=10**7))
def test_progress_stays_within_bounds(handed_off: int, eligible: int) -> None:
    assert 0.0 <= progress(handed_off=handed_off, eligible=eligible) <= 100.0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=10**6).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_progress_grows_with_each_hand_off(counts: tuple[int, int]) -> None:
    eligible, sent = counts
    assert progress(handed_off=sent, eligible=eligible) < progress(handed_off=sent + 1, eligible=eligible)


# --- eta -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("handed_off", "eligible", "elapsed", "eta"), [
    (0, 100, 10.0, None),  # no rate yet
    (10, 100, 0.0, None),
    (10, 100, -1.0, None),
    (10, 100, 10.0, 90.0),  # 1 per second, 90 left
    (50, 100, 25.0, 25.0),
    (100, 100, 60.0, 0.0),
    (120, 100, 60.0, 0.0),  # never negative
    (1000, 21000, 2.0, 40.0),
])
def test_eta(handed_off: int, eligible: int, elapsed: float, eta: float | None) -> None:
    result = eta_seconds(handed_off=handed_off, eligible=eligible, elapsed_seconds=elapsed)
    if eta is None:
        assert result is None
    else:
        assert result == pytest.approx(eta)


def test_blocked_refusals_count_toward_the_bounce_rate() -> None:
    """A block-listed sending IP leaves contacts valid (Blocked) but must still stop the mailing."""
    assert interrupt_reason(handed_off=1000, hard_bounces=50, complaints=0, limits=LIMITS) is None
    assert interrupt_reason(handed_off=1000, hard_bounces=50, blocked=60, complaints=0,
                            limits=LIMITS) == (
        "bounce rate 11.0% passed the 10.0% limit after 1,000 messages")

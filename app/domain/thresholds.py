"""Rates, thresholds and progress: when to interrupt a mailing, how far along it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    bounce_rate: float = 0.10
    complaint_rate: float = 0.005
    min_sample: int = 200


def interrupt_reason(*, handed_off: int, hard_bounces: int, complaints: int,
                     limits: Thresholds, blocked: int = 0) -> str | None:
    """Why the mailing must stop now, or None. Rates are judged only after `min_sample` messages,
    so three early bounces do not stop a large mailing. The bounce rate counts hard bounces and
    refusals aimed at the sender (Blocked): a block-listed IP must stop a mailing too, though it
    leaves the contacts valid."""
    if handed_off < max(1, limits.min_sample):
        return None
    bounce = (hard_bounces + blocked) / handed_off
    if bounce > limits.bounce_rate:
        return (f"bounce rate {bounce:.1%} passed the {limits.bounce_rate:.1%} limit "
                f"after {handed_off:,} messages")
    complaint = complaints / handed_off
    if complaint > limits.complaint_rate:
        return (f"complaint rate {complaint:.2%} passed the {limits.complaint_rate:.2%} limit "
                f"after {handed_off:,} messages")
    return None


RENDER_FAILURES_LIMIT = 10  # messages that could not be built before the mailing stops
RENDER_FAILURES_RATE = 0.01  # or this share of the messages tried, after RENDER_SAMPLE
RENDER_SAMPLE = 100


def render_failures_stop(*, failed: int, tried: int) -> bool:
    """Must the mailing stop because its messages cannot be built? After RENDER_FAILURES_LIMIT
    failures, or more than 1% of at least RENDER_SAMPLE messages tried: bad content stops the mailing
    rather than burning its audience as Delivery errors."""
    if failed >= RENDER_FAILURES_LIMIT:
        return True
    return tried >= RENDER_SAMPLE and failed > RENDER_FAILURES_RATE * tried


def quota_left(*, quota: int | None, used_this_month: int) -> int | None:
    """Messages that may still go out this month; None means no quota."""
    if quota is None:
        return None
    return max(0, quota - used_this_month)


def progress(*, handed_off: int, eligible: int) -> float:
    """Percent sent, 0 to 100 (an empty audience is complete)."""
    if eligible <= 0:
        return 100.0
    return max(0.0, min(100.0, 100.0 * handed_off / eligible))


def eta_seconds(*, handed_off: int, eligible: int, elapsed_seconds: float) -> float | None:
    """Seconds left at the rate so far; None before there is a rate."""
    if handed_off <= 0 or elapsed_seconds <= 0:
        return None
    remaining = max(0, eligible - handed_off)
    return remaining / (handed_off / elapsed_seconds)

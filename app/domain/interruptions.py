"""Why a mailing was interrupted, and whether resuming it can work yet (docs/ARCHITECTURE.md).

The sending engine stores the reason as a sentence; `cause_of` recognises its wording. Resuming
while the cause still holds only interrupts the mailing again, so `resume_refusal` says what to do
instead: a spent monthly quota waits for the next month or a higher quota, and a relay that still
cannot be reached waits for the provider to be fixed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class Cause(StrEnum):
    QUOTA = "quota"
    RELAY = "relay"
    BOUNCES = "bounces"
    COMPLAINTS = "complaints"
    CONTENT = "content"
    OTHER = "other"


CAUSE_LABELS: dict[Cause, str] = {
    Cause.QUOTA: "Monthly quota used up",
    Cause.RELAY: "SMTP server unavailable",
    Cause.BOUNCES: "Bounce rate too high",
    Cause.COMPLAINTS: "Complaint rate too high",
    Cause.CONTENT: "Messages could not be built",
    Cause.OTHER: "Interrupted",
}

_WORDING: tuple[tuple[Cause, tuple[str, ...]], ...] = (
    (Cause.QUOTA, ("sending quota",)),
    (Cause.BOUNCES, ("bounce rate",)),
    (Cause.COMPLAINTS, ("complaint rate",)),
    (Cause.CONTENT, ("could not be built", "template cannot be used")),
    (Cause.RELAY, ("cannot connect", "refused every message", "connection lost", "smtp",
                   "connection refused", "timed out", "unreachable")),
)


def cause_of(reason: str) -> Cause:
    text = (reason or "").lower()
    for cause, words in _WORDING:
        if any(word in text for word in words):
            return cause
    return Cause.OTHER


def next_month(now: datetime) -> datetime:
    """The first instant of the month after `now` (when a monthly quota starts again)."""
    if now.month == 12:
        return now.replace(year=now.year + 1, month=1, day=1, hour=0, minute=0, second=0,
                           microsecond=0)
    return now.replace(month=now.month + 1, day=1, hour=0, minute=0, second=0, microsecond=0)


def resume_refusal(cause: Cause, *, quota: int | None, quota_left: int | None, now: datetime,
                   relay_problem: str | None) -> str | None:
    """Why resuming now would fail, with what to do; None when resuming can go ahead.

    A spent quota refuses whatever stopped the mailing (it would stop again at once); the relay
    is only asked about when it is what stopped the mailing (`relay_problem` None: reachable)."""
    if quota is not None and quota_left == 0:
        return (f"The monthly sending quota of {quota:,} messages is used up. Raise it in "
                f"Settings, or resume from {next_month(now):%Y-%m-%d} (UTC) when it starts "
                "again.")
    if cause is Cause.RELAY and relay_problem:
        return (f"The SMTP server still cannot be reached: {relay_problem}. Check the provider "
                "in Settings (host, port, security, login) or wait until it is back, then "
                "resume.")
    return None

"""When a follow-up step goes out: pure rules, no database (see docs/ARCHITECTURE.md).

A step is sent `delay_days` after its parent finished; 0 days means right after it. A step added
to a parent that finished long ago would land in the past: it is then "due" and waits for staff to
confirm sending it now, rather than being scheduled silently into the past.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_DELAY_DAYS = 365


class StepDelayError(ValueError):
    """A step delay outside 0..MAX_DELAY_DAYS days."""


@dataclass(frozen=True)
class StepTime:
    send_at: datetime
    overdue: bool  # the time has passed already: sent only once staff confirm "send now"


def check_delay(days: int) -> int:
    if days < 0 or days > MAX_DELAY_DAYS:
        raise StepDelayError(
            f"a follow-up step is sent 0 to {MAX_DELAY_DAYS} days after its parent")
    return days


def step_time(parent_finished: datetime, delay_days: int, now: datetime) -> StepTime:
    """The moment a step goes out after its parent finished at `parent_finished`."""
    send_at = parent_finished + timedelta(days=check_delay(delay_days))
    return StepTime(send_at=send_at, overdue=send_at < now)


def plan_text(delay_days: int) -> str:
    """How a step waiting for its parent is described on its page."""
    if delay_days == 0:
        return "right after the parent mailing finishes"
    unit = "day" if delay_days == 1 else "days"
    return f"{delay_days} {unit} after the parent mailing finishes"

"""When a recipient the SMTP server refused for now (a 4xx reply) is tried again, and when the
refusals have lasted long enough to give up (docs/ARCHITECTURE.md, "Sending")."""

from __future__ import annotations

from datetime import datetime, timedelta

# Minutes before attempt n+1 after the n-th temporary refusal; hourly after the last one.
SCHEDULE_MINUTES: tuple[int, ...] = (1, 5, 15, 60)
HOURLY = 60


def delay(attempt: int, unit: timedelta = timedelta(minutes=1)) -> timedelta:
    """The wait after the `attempt`-th temporary refusal (1 for the first): 1, 5, 15, 60 minutes,
    then hourly. `unit` scales the whole schedule (a minute in production; shorter in a bench)."""
    index = max(attempt, 1) - 1
    minutes = SCHEDULE_MINUTES[index] if index < len(SCHEDULE_MINUTES) else HOURLY
    return unit * minutes


def next_attempt(*, attempt: int, first_deferred: datetime, now: datetime, max_age: timedelta,
                 unit: timedelta = timedelta(minutes=1)) -> datetime | None:
    """When to try again after the `attempt`-th temporary refusal, or None to give up: the
    refusals began `max_age` ago or more (the recipient then becomes a Soft bounce)."""
    if now - first_deferred >= max_age:
        return None
    return now + delay(attempt, unit)


def all_refused_for(first_failure: float | None, now: float) -> float:
    """Seconds every attempt has been refused for now or failed to connect, since the first
    failure of the current run (0 when the last attempt succeeded)."""
    if first_failure is None:
        return 0.0
    return max(0.0, now - first_failure)


_SLOW_DOWN_WORDS = ("too many connections", "too many messages", "too many recipients",
                    "rate limit", "rate-limit", "ratelimit", "throttl", "slow down",
                    "too fast", "sending rate", "too many concurrent")


def is_slow_down(code: int, text: str) -> bool:
    """Does this temporary refusal ask us to send more slowly? 421 (the server closes the
    connection), 454 throttling, 451 4.7.x about rates, and any 4xx naming too many connections
    or messages, a rate limit or throttling."""
    if not 400 <= code < 500:
        return False
    lowered = text.lower()
    if code == 421:
        return True
    if any(word in lowered for word in _SLOW_DOWN_WORDS):
        return True
    return code == 451 and lowered.lstrip().startswith("4.7.") and "rate" in lowered

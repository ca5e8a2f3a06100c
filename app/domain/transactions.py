"""When a transaction may be dated: the same rule for CSV imports, the contact page and the CLI.

A transaction lifts a contact's inactivity suppression, so a date far in the future would lift it
for years. A little ahead of the server's clock is allowed (another time zone, a skewed clock).
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# A transaction may be this far ahead of the server's clock, not further.
TRANSACTION_CLOCK_SKEW = timedelta(days=1)


def latest_transaction_time(now: datetime) -> datetime:
    """The latest moment a transaction recorded at `now` may carry."""
    return now + TRANSACTION_CLOCK_SKEW


def future_date_problem(occurred_at: datetime, now: datetime) -> str | None:
    """Why a transaction date is refused (too far in the future), or None.

    A date without a time zone is taken as UTC, as everywhere else.
    """
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    latest = latest_transaction_time(now)
    if occurred_at > latest:
        return (f"{occurred_at:%Y-%m-%d %H:%M} UTC is in the future; a transaction may be dated"
                f" at most one day ahead (until {latest:%Y-%m-%d %H:%M} UTC)")
    return None

"""The A/B tests' periodic job: decide the tests whose wait is over and release the remainder."""

from __future__ import annotations

from jobs.context import in_app_context


@in_app_context
def decide_due() -> list[int]:
    """Pick the winner of every test whose wait is over; start sending its remainder."""
    from app.services import ab_tests
    from jobs.enqueue import kick_sending

    decided = ab_tests.decide_due()
    if decided:
        kick_sending()
    return decided

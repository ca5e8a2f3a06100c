"""Conversions: which mailing a transaction is credited to (docs/ARCHITECTURE.md).

A transaction counts as a mailing's conversion when the contact clicked one of the mailing's
links at most `window_days` days before it (a click at the transaction's very instant counts; a
click after it does not). When several clicks qualify, the last one before the transaction wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

DEFAULT_WINDOW_DAYS = 7


@dataclass(frozen=True)
class Click:
    mailing_id: int
    recipient_id: int
    clicked_at: datetime


def window_start(transaction_at: datetime, window_days: int) -> datetime:
    return transaction_at - timedelta(days=window_days)


def credited_click(clicks: list[Click], transaction_at: datetime,
                   window_days: int) -> Click | None:
    """The last click within the window before the transaction, or None. Ties on the instant go
    to the later recipient id (the newer mailing)."""
    start = window_start(transaction_at, window_days)
    inside = [c for c in clicks if start <= c.clicked_at <= transaction_at]
    if not inside:
        return None
    return max(inside, key=lambda c: (c.clicked_at, c.recipient_id))


def parse_amount(raw: str) -> Decimal | None:
    """A transaction's amount as money (12.50, "1,299.00", "EUR 12"), or None when it is not a
    number: the conversion still counts, without revenue."""
    text = "".join(ch for ch in (raw or "") if ch.isdigit() or ch in ".-")
    if not text or text in {".", "-"}:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or abs(value) >= Decimal("1e12"):
        return None
    return value.quantize(Decimal("0.01"))


def rate(conversions: int, clickers: int) -> float:
    """Conversions per recipient who clicked (people only; machine clicks left out)."""
    return conversions / clickers if clickers else 0.0

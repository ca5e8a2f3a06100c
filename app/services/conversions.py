"""Conversions: transactions credited to the mailing whose link the contact clicked last before
them, within the conversion window (rules in app.domain.conversions; docs/ARCHITECTURE.md).

`attribute` runs when a transaction is recorded; `backfill` credits a mailing's past
transactions (after an import of older transactions, say); `figures` reads what the mailing page
shows. Like every use case here they do not commit: the caller does.

Only clicks by people count (a click flagged as a machine, a link scanner say, never converts).
Links carry the mailing's UTM tags, so a web analytics tool sees the same visits come from the
same campaign and can agree with these figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from app.domain import conversions as rules
from app.domain import figures as names
from app.domain.events import CLICK
from app.extensions import db
from app.models import Conversion, Recipient, ResponseEvent, Transaction
from app.services import settings, totals


def window_days() -> int:
    """The conversion window in days, 1 to 90: the Settings page's value, else
    SENDBOARD_CONVERSION_DAYS (default 7)."""
    return int(settings.get("conversion_days"))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _clicks(contact_id: int, start: datetime, end: datetime,
            mailing_id: int | None = None) -> list[rules.Click]:
    stmt = (
        select(ResponseEvent.mailing_id, ResponseEvent.recipient_id, ResponseEvent.occurred_at)
        .join(Recipient, Recipient.id == ResponseEvent.recipient_id)
        .where(Recipient.contact_id == contact_id, ResponseEvent.kind == CLICK,
               ResponseEvent.machine.is_(False),
               ResponseEvent.occurred_at >= start, ResponseEvent.occurred_at <= end)
    )
    if mailing_id is not None:
        stmt = stmt.where(ResponseEvent.mailing_id == mailing_id)
    return [rules.Click(m, r, _aware(at)) for m, r, at in db.session.execute(stmt)]


def attribute(transaction: Transaction, days: int | None = None) -> Conversion | None:
    """Credit one transaction to the mailing clicked last before it within the window, once
    (a transaction already credited keeps its conversion). Returns the conversion or None."""
    if transaction.id is None:
        db.session.flush()
    existing = db.session.execute(
        select(Conversion).where(Conversion.transaction_id == transaction.id)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    days = window_days() if days is None else days
    at = _aware(transaction.occurred_at)
    click = rules.credited_click(
        _clicks(transaction.contact_id, rules.window_start(at, days), at), at, days)
    if click is None:
        return None
    conversion = Conversion(transaction_id=transaction.id, mailing_id=click.mailing_id,
                            recipient_id=click.recipient_id, clicked_at=click.clicked_at,
                            amount=rules.parse_amount(transaction.amount))
    db.session.add(conversion)
    db.session.flush()
    return conversion


def backfill(mailing_id: int, days: int | None = None) -> int:
    """Credit the transactions that followed clicks on this mailing and have no conversion yet
    (each still goes to the last click before it, which may be another mailing's). Returns how
    many conversions this mailing gained."""
    days = window_days() if days is None else days
    first_last = db.session.execute(
        select(func.min(ResponseEvent.occurred_at), func.max(ResponseEvent.occurred_at))
        .where(ResponseEvent.mailing_id == mailing_id, ResponseEvent.kind == CLICK,
               ResponseEvent.machine.is_(False))
    ).one()
    if first_last[0] is None:
        return 0
    start, end = _aware(first_last[0]), _aware(first_last[1]) + timedelta(days=days)
    clickers = select(Recipient.contact_id).where(Recipient.mailing_id == mailing_id,
                                                  Recipient.clicks > Recipient.machine_clicks)
    candidates = db.session.execute(
        select(Transaction)
        .where(Transaction.contact_id.in_(clickers),
               Transaction.occurred_at >= start, Transaction.occurred_at <= end,
               ~select(Conversion.id).where(Conversion.transaction_id == Transaction.id)
               .exists())
        .order_by(Transaction.id)
    ).scalars().all()
    gained = 0
    for transaction in candidates:
        conversion = attribute(transaction, days)
        if conversion is not None and conversion.mailing_id == mailing_id:
            gained += 1
    return gained


@dataclass(frozen=True)
class ConversionFigures:
    conversions: int
    revenue: Decimal
    clickers: int  # recipients who clicked, people only (machine clicks left out)
    window_days: int

    @property
    def rate(self) -> float:
        """Conversions per person who clicked."""
        return rules.rate(self.conversions, self.clickers)


def figures(mailing_id: int, counters: dict[str, int] | None = None) -> ConversionFigures:
    """The mailing page's conversions, revenue and conversion rate, read from the Conversion
    rows themselves and the human clickers counter."""
    count, revenue = db.session.execute(
        select(func.count(Conversion.id), func.coalesce(func.sum(Conversion.amount), 0))
        .where(Conversion.mailing_id == mailing_id)
    ).one()
    counters = counters if counters is not None else totals.get(mailing_id)
    return ConversionFigures(
        conversions=int(count), revenue=Decimal(str(revenue)).quantize(Decimal("0.01")),
        clickers=int(counters.get(names.CLICKED_UNIQUE_HUMAN, 0)), window_days=window_days())


__all__ = ["ConversionFigures", "attribute", "backfill", "figures", "window_days"]

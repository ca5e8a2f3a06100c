"""UTC columns: stored as naive UTC, read back aware, naive input refused, also when the column's
processor has just seen the same wall-clock time (it remembers its last value)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import StatementError

from app.extensions import db
from app.models import Recipient
from tests.factories import make_mailing

RT = Recipient.__table__


def _recipients(n: int) -> list[int]:
    mailing = make_mailing([])
    rows = [Recipient(mailing_id=mailing.id, address=f"r{i}@example.org") for i in range(n)]
    db.session.add_all(rows)
    db.session.commit()
    return [r.id for r in rows]


def test_many_rows_bound_with_repeating_and_changing_times_read_back_as_written(app) -> None:
    ids = _recipients(6)
    base = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    # Runs of one value, an equal instant in another zone, and a change back.
    written = [base, base, base.astimezone(paris), base + timedelta(seconds=1), base,
               base + timedelta(microseconds=5)]
    db.session.execute(update(RT).where(RT.c.id == bindparam("rid")).values(
        response_at=bindparam("at")), [{"rid": rid, "at": at} for rid, at in zip(ids, written, strict=True)])
    db.session.commit()
    read = dict(db.session.execute(select(RT.c.id, RT.c.response_at).where(RT.c.id.in_(ids))).all())
    assert [read[rid] for rid in ids] == written
    assert all(value.tzinfo is not None and value.utcoffset() == timedelta(0)
               for value in read.values())


def test_a_naive_time_is_refused_right_after_the_same_wall_clock_time_in_utc(app) -> None:
    [rid] = _recipients(1)
    aware = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    db.session.execute(update(RT).where(RT.c.id == rid).values(response_at=aware))
    with pytest.raises(StatementError, match="naive datetime"):
        db.session.execute(update(RT).where(RT.c.id == rid).values(
            response_at=aware.replace(tzinfo=None)))
    db.session.rollback()

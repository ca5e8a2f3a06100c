"""Failed sign-ins, counted per address and per client address in the database.

Five failures within a minute lock the key for a minute; each further lockout doubles the wait,
up to an hour. A sign-in that succeeds clears the address's count (not the client address's).
Kept in the database so every web worker sees the same counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import LoginThrottle, utcnow

MAX_FAILURES = 5
WINDOW = timedelta(minutes=1)
FIRST_LOCK = timedelta(minutes=1)
LONGEST_LOCK = timedelta(hours=1)
# A key is forgotten this long after its last lockout ended.
FORGET_AFTER = timedelta(hours=24)


def keys(email: str, ip: str) -> list[str]:
    return [f"email:{email.strip().lower()[:300]}", f"ip:{ip[:64]}"]


def locked_until(key_list: list[str], now: datetime | None = None) -> datetime | None:
    """The latest time any of the keys stays locked, or None when none is locked."""
    now = now or utcnow()
    latest: datetime | None = None
    for key in key_list:
        row = db.session.get(LoginThrottle, key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            latest = row.locked_until if latest is None else max(latest, row.locked_until)
    return latest


def _lock_length(lockouts: int) -> timedelta:
    return min(FIRST_LOCK * (2 ** min(lockouts, 12)), LONGEST_LOCK)


def fail(key_list: list[str], now: datetime | None = None) -> None:
    """Count one failed sign-in against each key; lock the keys that reach the limit."""
    now = now or utcnow()
    for key in key_list:
        for _attempt in range(2):
            row = db.session.get(LoginThrottle, key)
            if row is None:
                row = LoginThrottle(key=key, failures=0, window_start=now, lockouts=0)
                db.session.add(row)
            elif row.window_start + WINDOW <= now and (row.locked_until is None
                                                       or row.locked_until <= now):
                if row.locked_until is not None and row.locked_until + FORGET_AFTER <= now:
                    row.lockouts = 0
                row.failures, row.window_start = 0, now
            row.failures += 1
            if row.failures >= MAX_FAILURES:
                row.locked_until = now + _lock_length(row.lockouts)
                row.lockouts += 1
                row.failures, row.window_start = 0, now
            # The throttle commits its own counters (the one exception to the caller committing,
            # docs/ARCHITECTURE.md): a failed sign-in counts even though the request changes
            # nothing else, and a row another worker created first is only seen by committing.
            try:
                db.session.commit()
                break
            except IntegrityError:  # another worker created the row first
                db.session.rollback()


def succeed(email_key: str) -> None:
    row = db.session.get(LoginThrottle, email_key)
    if row is not None:
        db.session.delete(row)

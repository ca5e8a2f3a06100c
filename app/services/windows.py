"""Send windows and delivery at each contact's local time, as the engine and the pages use them.

- A mailing with a window (`window_start_minute`, `window_end_minute`, `window_days`, read in the
  organisation's zone) is claimed only while its window is open (`open_now`), and a batch claimed
  inside it stops handing over at its end (`closes_at`); the rest waits in the queue, and the
  scheduler tick starts sending again once it opens.
- With local delivery, each Planned recipient gets a `release_at` when preparing (`assign`): the
  instant the send time's wall clock is reached in the contact's zone (blank: the organisation's).
  Zones where it has already passed are sent at once. The claim takes no recipient whose
  `release_at` is still ahead (`released`).

The rules themselves are in app.domain.windows; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, or_, select, update

from app.domain import windows as rules
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, Setting, utcnow

RT = Recipient.__table__

# The release time of an A/B test's remainder until the winner is known (app.services.ab_tests).
HELD = datetime(2999, 1, 1, tzinfo=UTC)


class WindowSetupError(ValueError):
    """A window or local-delivery setup that was refused; the message says why."""


def org_zone() -> str:
    """The organisation's zone: the `time_zone` setting if stored and known, else
    SENDBOARD_TIME_ZONE, else UTC."""
    row = db.session.get(Setting, "time_zone")
    if row is not None and isinstance(row.value, str) and rules.is_zone(row.value):
        return row.value
    configured = str(current_app.config.get("TIME_ZONE") or "UTC")
    return configured if rules.is_zone(configured) else "UTC"


def window_of(mailing: Mailing) -> rules.Window | None:
    if mailing.window_start_minute is None or mailing.window_end_minute is None:
        return None
    try:
        return rules.Window(mailing.window_start_minute, mailing.window_end_minute,
                            mailing.window_days or rules.ALL_DAYS)
    except rules.WindowError:
        return None  # a row written by hand: no window rather than no sending


def open_now(mailing: Mailing, now: datetime) -> bool:
    """May the engine claim this mailing's recipients at `now`?"""
    window = window_of(mailing)
    return window is None or rules.is_open(window, now, org_zone())


def closes_at(mailing: Mailing, now: datetime) -> datetime | None:
    """When the window open at `now` closes (a batch hands over nothing after it); `now` itself
    when it is closed already, None without a window."""
    window = window_of(mailing)
    if window is None:
        return None
    return rules.closes_at(window, now, org_zone()) or now


def released(now: datetime) -> Any:
    """The claim's condition on recipient rows: no release time, or one that has come."""
    return or_(RT.c.release_at.is_(None), RT.c.release_at <= now)


# ------------------------------------------------------------------------- the editor


def save_setup(mailing: Mailing, form: Mapping[str, Any]) -> None:
    """Store the window and local-delivery choice posted by the editor (not committed).

    Fields: window ("on"), window_start and window_end ("HH:MM"), window_day (0=Monday ..
    6=Sunday, repeated), local_delivery ("on"). Raises WindowSetupError on bad input."""
    if form.get("window") in ("on", "y", "1", "true"):
        try:
            start = rules.parse_hhmm(str(form.get("window_start", ""))[:20])
            end = rules.parse_hhmm(str(form.get("window_end", ""))[:20], end=True)
            days = 0
            getlist = getattr(form, "getlist", None)
            chosen = getlist("window_day") if getlist else form.get("window_day", [])
            for raw in list(chosen)[:7]:
                text = str(raw)
                if not (text.isascii() and text.isdigit() and len(text) == 1 and int(text) <= 6):
                    raise rules.WindowError("pick the window's days from Monday to Sunday")
                days |= 1 << int(text)
            rules.Window(start, end, days)
        except rules.WindowError as exc:
            raise WindowSetupError(str(exc)) from exc
        mailing.window_start_minute, mailing.window_end_minute = start, end
        mailing.window_days = days
    else:
        mailing.window_start_minute = mailing.window_end_minute = None
        mailing.window_days = rules.ALL_DAYS
    mailing.local_delivery = form.get("local_delivery") in ("on", "y", "1", "true")


# ------------------------------------------------------------------------- preparing


def _base_time(mailing: Mailing, now: datetime) -> tuple[datetime, str]:
    """The send time whose wall clock each zone waits for, and the zone it was given in."""
    if mailing.send_at is not None:
        zone = mailing.send_at_zone if rules.is_zone(mailing.send_at_zone or "") else "UTC"
        return mailing.send_at, zone
    return now, org_zone()


def set_local_release(mailing: Mailing, where: Any, now: datetime,
                      passed: datetime | None = None) -> int:
    """Give the recipients matched by `where` their release time by their contact's zone, in
    the caller's transaction (`passed` for zones whose time has come already); returns how
    many wait for a later time."""
    if not mailing.local_delivery:
        return 0
    base, base_zone = _base_time(mailing, now)
    org = org_zone()
    zones = db.session.execute(
        select(func.coalesce(Contact.time_zone, "")).distinct()
        .select_from(RT.join(Contact.__table__, Contact.id == RT.c.contact_id))
        .where(where)
    ).scalars().all()
    by_release: dict[datetime | None, list[str]] = {}
    for name in zones:
        effective = name if name and rules.is_zone(name) else org
        at = rules.local_release(base, base_zone, effective)
        by_release.setdefault(at if at > now else passed, []).append(name)
    waiting = 0
    for at, names in by_release.items():
        contacts = select(Contact.id).where(func.coalesce(Contact.time_zone, "").in_(names))
        count = int(db.session.execute(
            update(RT).where(where, RT.c.contact_id.in_(contacts)).values(release_at=at)
        ).rowcount or 0)
        if at is not None and at > now:
            waiting += count
    return waiting


def assign(mailing: Mailing, now: datetime | None = None) -> int:
    """At preparation, after the A/B split: local release times for the Planned recipients not
    held for a test's winner. Returns how many wait for a later time."""
    now = now or utcnow()
    where = (RT.c.mailing_id == mailing.id) & (RT.c.response == Response.PLANNED.value) \
        & RT.c.release_at.is_(None)
    return set_local_release(mailing, where, now)


# ------------------------------------------------------------------------- the mailing page


@dataclass(frozen=True)
class Waiting:
    count: int
    at: datetime  # UTC
    label: str  # "08:00 Europe/Berlin"


def _label(at: datetime, zones: list[str]) -> str:
    shown = zones[:3]
    parts = [f"{at.astimezone(rules.zone(z)):%H:%M} {z}" for z in shown]
    more = f" and {len(zones) - 3} more zones" if len(zones) > 3 else ""
    return ", ".join(parts) + more


def waiting(mailing: Mailing, now: datetime | None = None) -> list[Waiting]:
    """What is waiting for which time: recipients with a release time ahead (by zone), and,
    while the window is closed, everyone else still Planned (for its next opening)."""
    now = now or utcnow()
    org = org_zone()
    rows = db.session.execute(
        select(RT.c.release_at, Contact.time_zone, func.count())
        .select_from(RT.outerjoin(Contact.__table__, Contact.id == RT.c.contact_id))
        .where(RT.c.mailing_id == mailing.id, RT.c.response == Response.PLANNED.value,
               RT.c.release_at > now, RT.c.release_at < HELD)
        .group_by(RT.c.release_at, Contact.time_zone)
    ).all()
    grouped: dict[datetime, tuple[int, list[str]]] = {}
    for at, name, count in rows:
        effective = name if name and rules.is_zone(name) else org
        total, names = grouped.get(at, (0, []))
        if effective not in names:
            names.append(effective)
        grouped[at] = (total + int(count), names)
    window = window_of(mailing)
    result = []
    for at, (count, names) in sorted(grouped.items()):
        opens = at if window is None else rules.next_open(window, at, org)
        if opens != at:
            result.append(Waiting(count, opens, _label(opens, [org])))
        else:
            result.append(Waiting(count, at, _label(at, sorted(names))))
    if window is not None and not rules.is_open(window, now, org):
        ready = int(db.session.execute(
            select(func.count()).select_from(RT)
            .where(RT.c.mailing_id == mailing.id, RT.c.response == Response.PLANNED.value,
                   RT.c.batch_id.is_(None), released(now))
        ).scalar_one())
        if ready:
            opens = rules.next_open(window, now, org)
            result.insert(0, Waiting(ready, opens, _label(opens, [org])))
    return result


def page_facts(mailing: Mailing) -> dict[str, Any]:
    """The window, local delivery and waiting figures for the mailing page and the editor."""
    window = window_of(mailing)
    org = org_zone()
    now = utcnow()
    return {
        "org_zone": org,
        "window": window,
        "window_text": rules.describe(window) if window else "",
        "window_open": window is None or rules.is_open(window, now, org),
        "start": rules.hhmm(window.start_minute) if window else "08:00",
        "end": rules.hhmm(window.end_minute) if window else "20:00",
        "days": window.days if window else rules.WEEKDAYS,
        "day_names": rules.DAY_NAMES,
        "local_delivery": bool(mailing.local_delivery),
        # Only a mailing with a window, local delivery or an A/B test has anyone waiting.
        "waiting": waiting(mailing, now) if mailing.started_at is not None and (
            window is not None or mailing.local_delivery or mailing.ab_share) else [],
    }


__all__ = ["HELD", "WindowSetupError", "assign", "closes_at", "open_now", "org_zone",
           "page_facts", "released", "save_setup", "set_local_release", "waiting", "window_of"]

"""Send windows and local delivery times: wall-clock rules in named zones, DST by zoneinfo.

A send window is a daily span of wall-clock minutes (start inclusive, end exclusive) on the
weekdays of a bit mask (Monday=1, Tuesday=2, ... Sunday=64), in the organisation's zone. A span
whose end is at or before its start runs past midnight into the next day (22:00-06:00); the
weekday is the day it opens. Every instant is computed by converting the wall-clock edges of
each day with zoneinfo, so a window is as long as the clock says, also on the days clocks change:
an edge that falls in the hour skipped in spring moves to the first minute after the gap, and one
that falls in the hour repeated in autumn takes its first occurrence.

Local delivery: a mailing sent "at 09:00 local time" reaches each contact when the wall clock in
the contact's own zone shows the send time on the send date (see `local_release`).

See docs/ARCHITECTURE.md ("Sending and its invariants").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAY_MINUTES = 24 * 60
ALL_DAYS = 127
WEEKDAYS = 31  # Monday to Friday
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class WindowError(ValueError):
    """A window or zone that cannot be used; the message says why."""


@dataclass(frozen=True)
class Window:
    start_minute: int  # minutes after midnight, 0..1439
    end_minute: int  # 1..1440; at or before start: the window runs past midnight
    days: int = ALL_DAYS  # bit mask, Monday=1 .. Sunday=64

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < DAY_MINUTES:
            raise WindowError("the window's start must be between 00:00 and 23:59")
        if not 0 <= self.end_minute <= DAY_MINUTES:
            raise WindowError("the window's end must be between 00:00 and 24:00")
        if self.start_minute == self.end_minute:
            raise WindowError("the window's start and end are the same time")
        if not 0 < self.days <= ALL_DAYS:
            raise WindowError("pick at least one day for the window")


# Files of the zone database that name no place: the host's own zone and its rules template,
# and "Factory" (a placeholder whose abbreviation is "-00").
_NOT_PLACES = frozenset({"localtime", "posixrules", "posix/localtime", "right/localtime", "Factory"})


def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name; WindowError for an unknown (or absurdly long) one, and for the
    database's entries that are not places (the host's `localtime`, `posixrules`, `Factory`)."""
    if not name or len(name) > 64 or name in _NOT_PLACES or name.startswith(("posix/", "right/")):
        raise WindowError(f"Unknown time zone {name[:64]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise WindowError(f"Unknown time zone {name!r}") from exc


def is_zone(name: str) -> bool:
    try:
        zone(name)
    except WindowError:
        return False
    return True


def wall_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time happens in `tz`: the first one when it happens
    twice, the end of the gap when clocks jump over it."""
    first = local.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    probe = local
    for _ in range(24 * 60):  # gaps are an hour or two; a whole day bounds the walk
        probe += timedelta(minutes=1)
        candidate = probe.replace(tzinfo=tz, fold=0)
        if candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == probe:
            return candidate.astimezone(UTC)
    return first.astimezone(UTC)  # pragma: no cover - no zone skips a whole day


def parse_hhmm(value: str, *, end: bool = False) -> int:
    """Minutes after midnight of 'HH:MM' (24:00 allowed as an end); WindowError otherwise."""
    text = value.strip()
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and 1 <= len(p) <= 2 for p in parts):
        raise WindowError(f"{text[:20]!r} is not a time of day (HH:MM)")
    hours, minutes = int(parts[0]), int(parts[1])
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise WindowError(f"{text[:20]!r} is not a time of day (HH:MM)")
    return hours * 60 + minutes


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def days_label(days: int) -> str:
    """'every day', 'weekdays', 'weekends' or the days named, e.g. 'Mon, Wed, Fri'."""
    if days == ALL_DAYS:
        return "every day"
    if days == WEEKDAYS:
        return "weekdays"
    if days == 96:
        return "weekends"
    return ", ".join(name for i, name in enumerate(DAY_NAMES) if days & (1 << i))


def describe(window: Window) -> str:
    """e.g. '08:00-20:00, weekdays'."""
    return f"{hhmm(window.start_minute)}-{hhmm(window.end_minute)}, {days_label(window.days)}"


def _spans(window: Window, tz: ZoneInfo, around: date, before: int, after: int,
           ) -> list[tuple[datetime, datetime]]:
    """The window's open spans in UTC, for the local days from `around - before` to
    `around + after`, in order."""
    spans = []
    for offset in range(-before, after + 1):
        day = around + timedelta(days=offset)
        if not window.days & (1 << day.weekday()):
            continue
        start_local = datetime.combine(day, time()) + timedelta(minutes=window.start_minute)
        end_day = day if window.end_minute > window.start_minute else day + timedelta(days=1)
        end_local = datetime.combine(end_day, time()) + timedelta(minutes=window.end_minute)
        start, end = wall_to_utc(start_local, tz), wall_to_utc(end_local, tz)
        if end > start:
            spans.append((start, end))
    return spans


def _local_day(at: datetime, tz: ZoneInfo) -> date:
    if at.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    return at.astimezone(tz).date()


def is_open(window: Window, at: datetime, zone_name: str) -> bool:
    """Is the window open at instant `at`?"""
    tz = zone(zone_name)
    return any(s <= at < e for s, e in _spans(window, tz, _local_day(at, tz), 1, 0))


def closes_at(window: Window, at: datetime, zone_name: str) -> datetime | None:
    """The end of the span open at `at` (UTC), or None when the window is closed then."""
    tz = zone(zone_name)
    for s, e in _spans(window, tz, _local_day(at, tz), 1, 0):
        if s <= at < e:
            return e
    return None


def next_open(window: Window, at: datetime, zone_name: str) -> datetime:
    """`at` itself when the window is open then, else the instant it next opens (UTC)."""
    tz = zone(zone_name)
    for s, e in _spans(window, tz, _local_day(at, tz), 1, 8):
        if s <= at < e:
            return at
        if s > at:
            return s
    raise WindowError("the window never opens")  # pragma: no cover - days is never empty


def local_release(send_at: datetime, send_zone: str, contact_zone: str) -> datetime:
    """When the contact's wall clock shows the send time: the date and wall-clock time of
    `send_at` in `send_zone`, read in `contact_zone` (UTC)."""
    wall = send_at.astimezone(zone(send_zone)).replace(tzinfo=None, second=0, microsecond=0)
    return wall_to_utc(wall, zone(contact_zone))


# --------------------------------------------------------------------------- the zone picker

COMMON_ZONES: tuple[str, ...] = (
    "UTC", "Europe/London", "Europe/Dublin", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin",
    "Europe/Madrid", "Europe/Rome", "Europe/Amsterdam", "Europe/Brussels", "Europe/Zurich",
    "Europe/Vienna", "Europe/Prague", "Europe/Warsaw", "Europe/Stockholm", "Europe/Helsinki",
    "Europe/Athens", "Europe/Istanbul", "Europe/Kyiv", "America/New_York", "America/Chicago",
    "America/Denver", "America/Phoenix", "America/Los_Angeles", "America/Anchorage",
    "Pacific/Honolulu", "America/Toronto", "America/Vancouver", "America/Mexico_City",
    "America/Sao_Paulo", "America/Argentina/Buenos_Aires", "America/Bogota", "America/Lima",
    "America/Santiago", "Africa/Johannesburg", "Africa/Lagos", "Africa/Cairo", "Africa/Nairobi",
    "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore", "Asia/Hong_Kong", "Asia/Shanghai",
    "Asia/Tokyo", "Asia/Seoul", "Asia/Jakarta", "Asia/Manila", "Australia/Sydney",
    "Australia/Melbourne", "Australia/Perth", "Pacific/Auckland",
)

_AREAS = frozenset({"Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic",
                    "Australia", "Europe", "Indian", "Pacific"})

# Old names still shipped as links to the canonical ones (the tz database's "backward" file).
_BACKWARD = frozenset({
    "America/Buenos_Aires", "America/Catamarca", "America/Cordoba", "America/Jujuy",
    "America/Mendoza", "America/Rosario", "America/Knox_IN", "America/Indianapolis",
    "America/Fort_Wayne", "America/Louisville", "America/Godthab", "America/Ensenada",
    "America/Porto_Acre", "America/Santa_Isabel", "America/Shiprock", "America/Virgin",
    "America/Atka", "America/Coral_Harbour", "America/Montreal", "America/Thunder_Bay",
    "America/Nipigon", "America/Rainy_River", "America/Yellowknife", "America/Pangnirtung",
    "Antarctica/South_Pole", "Asia/Ashkhabad", "Asia/Calcutta", "Asia/Chongqing",
    "Asia/Chungking", "Asia/Dacca", "Asia/Harbin", "Asia/Istanbul", "Asia/Kashgar",
    "Asia/Katmandu", "Asia/Macao", "Asia/Rangoon", "Asia/Saigon", "Asia/Tel_Aviv",
    "Asia/Thimbu", "Asia/Ujung_Pandang", "Asia/Ulan_Bator", "Atlantic/Faeroe",
    "Atlantic/Jan_Mayen", "Australia/ACT", "Australia/Canberra", "Australia/Currie",
    "Australia/LHI", "Australia/NSW", "Australia/North", "Australia/Queensland",
    "Australia/South", "Australia/Tasmania", "Australia/Victoria", "Australia/West",
    "Australia/Yancowinna", "Europe/Belfast", "Europe/Kiev", "Europe/Nicosia",
    "Europe/Tiraspol", "Europe/Uzhgorod", "Europe/Zaporozhye", "Pacific/Enderbury",
    "Pacific/Johnston", "Pacific/Ponape", "Pacific/Samoa", "Pacific/Truk", "Pacific/Yap",
    "Africa/Asmera", "Africa/Timbuktu", "America/Argentina/ComodRivadavia", "Asia/Choibalsan",
})


def _canonical(name: str) -> bool:
    area, _, rest = name.partition("/")
    return area in _AREAS and bool(rest) and name not in _BACKWARD


@lru_cache(maxsize=1)
def picker_zones() -> tuple[str, ...]:
    """Zone names for a picker: the common ones first, then every other canonical Area/City
    name A to Z. No deprecated aliases (US/*, Etc/* but UTC, backward links such as
    Asia/Calcutta), and only names this system's zone database knows."""
    known = available_timezones()
    common = tuple(z for z in COMMON_ZONES if z == "UTC" or z in known)
    rest = sorted(z for z in known if _canonical(z) and z not in common)
    return common + tuple(rest)


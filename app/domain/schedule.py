"""Schedule maths: a local date and time in a named zone, to UTC, with DST handled honestly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


class ScheduleError(ValueError):
    """A send time that cannot be used; the message says why."""


@dataclass(frozen=True)
class ResolvedTime:
    utc: datetime
    zone: str
    ambiguous: bool
    note: str | None


def zone_info(zone: str) -> ZoneInfo:
    if not zone or len(zone) > 64:  # the longest IANA name has 32 characters
        raise ScheduleError(f"Unknown time zone {zone[:64]!r}")
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(f"Unknown time zone {zone!r}") from exc


def common_zones() -> list[str]:
    """IANA zone names for a picker, sorted."""
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))


def to_utc(local: datetime, zone: str) -> ResolvedTime:
    """The UTC instant of a wall-clock time in `zone`.

    A time skipped by a DST change is refused; a time that happens twice (clocks go back) takes
    the first occurrence and says so in `note`.
    """
    if local.tzinfo is not None:
        raise ScheduleError("give the local time without a zone; the zone is a separate field")
    tz = zone_info(zone)
    first = local.replace(tzinfo=tz, fold=0)
    second = local.replace(tzinfo=tz, fold=1)
    # A wall time that does not survive the round trip through UTC does not exist in the zone.
    back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back != local:
        old = (local - timedelta(hours=3)).replace(tzinfo=tz).utcoffset() or timedelta()
        new = (local + timedelta(hours=3)).replace(tzinfo=tz).utcoffset() or timedelta()
        # The instant of the change: the gap is [change + old, change + new) in wall-clock time.
        low, high = (local - new).replace(tzinfo=UTC), (local - old).replace(tzinfo=UTC)
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(tz).utcoffset() == old:
                low = middle
            else:
                high = middle
        change = high.replace(microsecond=0)
        gap_start, gap_end = (change + old).replace(tzinfo=None), (change + new).replace(tzinfo=None)
        raise ScheduleError(
            f"{local:%Y-%m-%d %H:%M} does not exist in {zone}: clocks jump forward by "
            f"{int((new - old).total_seconds() // 60)} minutes at {gap_start:%H:%M} "
            f"(UTC {change:%H:%M}), straight to {gap_end:%H:%M}. Pick another time."
        )
    ambiguous = first.utcoffset() != second.utcoffset()
    note = None
    if ambiguous:
        note = (
            f"{local:%Y-%m-%d %H:%M} happens twice in {zone} (clocks go back); the first one, "
            f"{first.tzname()} (UTC{_offset(first)}), was chosen."
        )
    return ResolvedTime(first.astimezone(UTC), zone, ambiguous, note)


def _offset(value: datetime) -> str:
    offset = value.utcoffset() or timedelta()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def local_display(utc: datetime, zone: str) -> str:
    """A UTC instant as the zone's wall-clock time, e.g. '2026-12-01 09:00 CET (Europe/Prague)'."""
    if utc.tzinfo is None:
        raise ValueError("utc must be timezone-aware")
    local = utc.astimezone(zone_info(zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({zone})"


def check_future(utc: datetime, now: datetime) -> None:
    """Refuse a send time that is not in the future."""
    if utc <= now:
        raise ScheduleError("The send time must be in the future.")

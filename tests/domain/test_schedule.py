"""Schedule maths (docs/ARCHITECTURE.md, "Mailing lifecycle"): local time in a named zone, DST handled honestly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.schedule import ScheduleError, check_future, common_zones, local_display, to_utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- ordinary times --------------------------------------------------------------------------

@pytest.mark.parametrize(("local", "zone", "expected"), [
    (datetime(2026, 12, 1, 9, 0), "Europe/Prague", utc(2026, 12, 1, 8, 0)),  # CET, UTC+1
    (datetime(2026, 6, 2, 9, 0), "Europe/Prague", utc(2026, 6, 2, 7, 0)),  # CEST, UTC+2
    (datetime(2026, 1, 15, 9, 30), "America/New_York", utc(2026, 1, 15, 14, 30)),  # EST, UTC-5
    (datetime(2026, 7, 4, 9, 30), "America/New_York", utc(2026, 7, 4, 13, 30)),  # EDT, UTC-4
    (datetime(2026, 3, 29, 1, 59), "Europe/Prague", utc(2026, 3, 29, 0, 59)),  # just before the gap
    (datetime(2026, 3, 29, 3, 0), "Europe/Prague", utc(2026, 3, 29, 1, 0)),  # first minute after it
    (datetime(2026, 3, 8, 3, 0), "America/New_York", utc(2026, 3, 8, 7, 0)),
    (datetime(2026, 5, 1, 23, 45), "Asia/Kolkata", utc(2026, 5, 1, 18, 15)),  # UTC+5:30
    (datetime(2026, 5, 1, 12, 0), "UTC", utc(2026, 5, 1, 12, 0)),
    (datetime(2026, 2, 28, 0, 0), "Australia/Sydney", utc(2026, 2, 27, 13, 0)),  # southern summer
])
def test_normal_times(local: datetime, zone: str, expected: datetime) -> None:
    resolved = to_utc(local, zone)
    assert resolved.utc == expected
    assert resolved.utc.tzinfo is not None and resolved.utc.utcoffset() == timedelta(0)
    assert resolved.zone == zone
    assert not resolved.ambiguous and resolved.note is None


# --- spring forward: times that do not exist -------------------------------------------------

@pytest.mark.parametrize(("local", "zone", "gap_start", "utc_at", "gap_end"), [
    (datetime(2026, 3, 29, 2, 0), "Europe/Prague", "02:00", "01:00", "03:00"),
    (datetime(2026, 3, 29, 2, 30), "Europe/Prague", "02:00", "01:00", "03:00"),
    (datetime(2026, 3, 29, 2, 59), "Europe/Prague", "02:00", "01:00", "03:00"),
    (datetime(2031, 3, 30, 2, 30), "Europe/Prague", "02:00", "01:00", "03:00"),
    (datetime(2026, 3, 8, 2, 0), "America/New_York", "02:00", "07:00", "03:00"),
    (datetime(2026, 3, 8, 2, 30), "America/New_York", "02:00", "07:00", "03:00"),
    (datetime(2026, 3, 8, 2, 59), "America/New_York", "02:00", "07:00", "03:00"),
])
def test_a_time_skipped_by_dst_is_refused_with_a_clear_message(local: datetime, zone: str, gap_start: str,
                                                               utc_at: str, gap_end: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        to_utc(local, zone)
    message = str(raised.value)
    assert zone in message
    assert f"{local:%Y-%m-%d %H:%M} does not exist" in message
    assert "60 minutes" in message
    assert f"at {gap_start} (UTC {utc_at})" in message
    assert f"to {gap_end}" in message
    assert "Pick another time" in message


def test_a_half_hour_gap_is_described_in_its_own_minutes() -> None:
    # Lord Howe Island moves its clocks by 30 minutes, from 02:00 to 02:30 (UTC 15:30 the day before).
    with pytest.raises(ScheduleError, match=r"30 minutes at 02:00 \(UTC 15:30\).*to 02:30") as raised:
        to_utc(datetime(2026, 10, 4, 2, 15), "Australia/Lord_Howe")
    assert "Australia/Lord_Howe" in str(raised.value)


# --- fall back: times that happen twice ------------------------------------------------------

@pytest.mark.parametrize(("local", "zone", "expected", "abbrev", "offset"), [
    (datetime(2026, 10, 25, 2, 0), "Europe/Prague", utc(2026, 10, 25, 0, 0), "CEST", "+02:00"),
    (datetime(2026, 10, 25, 2, 30), "Europe/Prague", utc(2026, 10, 25, 0, 30), "CEST", "+02:00"),
    (datetime(2026, 10, 25, 2, 59), "Europe/Prague", utc(2026, 10, 25, 0, 59), "CEST", "+02:00"),
    (datetime(2026, 11, 1, 1, 0), "America/New_York", utc(2026, 11, 1, 5, 0), "EDT", "-04:00"),
    (datetime(2026, 11, 1, 1, 30), "America/New_York", utc(2026, 11, 1, 5, 30), "EDT", "-04:00"),
])
def test_a_time_that_happens_twice_takes_the_first_with_a_note(local: datetime, zone: str, expected: datetime,
                                                               abbrev: str, offset: str) -> None:
    resolved = to_utc(local, zone)
    assert resolved.utc == expected
    assert resolved.ambiguous
    assert resolved.note is not None
    assert zone in resolved.note
    assert "happens twice" in resolved.note and "first" in resolved.note
    assert f"{abbrev} (UTC{offset})" in resolved.note


@pytest.mark.parametrize(("local", "zone", "expected"), [
    (datetime(2026, 10, 25, 1, 59), "Europe/Prague", utc(2026, 10, 24, 23, 59)),
    (datetime(2026, 10, 25, 3, 0), "Europe/Prague", utc(2026, 10, 25, 2, 0)),
    (datetime(2026, 11, 1, 0, 59), "America/New_York", utc(2026, 11, 1, 4, 59)),
    (datetime(2026, 11, 1, 2, 0), "America/New_York", utc(2026, 11, 1, 7, 0)),
])
def test_either_side_of_the_repeated_hour_is_plain(local: datetime, zone: str, expected: datetime) -> None:
    resolved = to_utc(local, zone)
    assert resolved.utc == expected and not resolved.ambiguous and resolved.note is None


# --- refused input ---------------------------------------------------------------------------

@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe/Praha", "", "../../etc/passwd", "CET CEST"])
def test_an_unknown_zone_is_refused(zone: str) -> None:
    with pytest.raises(ScheduleError, match="Unknown time zone"):
        to_utc(datetime(2026, 6, 1, 9, 0), zone)
    with pytest.raises(ScheduleError, match="Unknown time zone"):
        local_display(utc(2026, 6, 1, 9, 0), zone)


@pytest.mark.parametrize("aware", [
    utc(2026, 6, 1, 9, 0), datetime(2026, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=2))),
])
def test_an_aware_local_time_is_refused(aware: datetime) -> None:
    with pytest.raises(ScheduleError, match="without a zone"):
        to_utc(aware, "Europe/Prague")


# --- display ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("instant", "zone", "shown"), [
    (utc(2026, 12, 1, 8, 0), "Europe/Prague", "2026-12-01 09:00 CET (Europe/Prague)"),
    (utc(2026, 6, 2, 7, 0), "Europe/Prague", "2026-06-02 09:00 CEST (Europe/Prague)"),
    (utc(2026, 1, 15, 14, 30), "America/New_York", "2026-01-15 09:30 EST (America/New_York)"),
    (utc(2026, 7, 4, 13, 30), "America/New_York", "2026-07-04 09:30 EDT (America/New_York)"),
    (utc(2026, 10, 25, 0, 30), "Europe/Prague", "2026-10-25 02:30 CEST (Europe/Prague)"),
    (utc(2026, 10, 25, 1, 30), "Europe/Prague", "2026-10-25 02:30 CET (Europe/Prague)"),
    (utc(2026, 5, 1, 12, 0), "UTC", "2026-05-01 12:00 UTC (UTC)"),
])
def test_local_display(instant: datetime, zone: str, shown: str) -> None:
    assert local_display(instant, zone) == shown


def test_local_display_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        local_display(datetime(2026, 6, 1, 9, 0), "Europe/Prague")


ZONES = ["Europe/Prague", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "America/Sao_Paulo"]


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)), st.sampled_from(ZONES))
def test_a_resolved_time_displays_as_the_wall_time_that_was_asked_for(local: datetime, zone: str) -> None:
    local = local.replace(second=0, microsecond=0)
    try:
        resolved = to_utc(local, zone)
    except ScheduleError as exc:
        assert re.search(r"does not exist in .+: clocks jump forward", str(exc))
        return
    assert local_display(resolved.utc, zone).startswith(f"{local:%Y-%m-%d %H:%M} ")
    assert resolved.ambiguous is (resolved.note is not None)


def test_common_zones() -> None:
    zones = common_zones()
    assert "Europe/Prague" in zones and "America/New_York" in zones
    assert zones == sorted(zones)
    assert not any(z.startswith("Etc/") or "/" not in z for z in zones)


# --- the send time must be in the future -----------------------------------------------------

NOW = utc(2026, 6, 1, 12, 0)


@pytest.mark.parametrize("when", [NOW - timedelta(days=1), NOW - timedelta(seconds=1), NOW])
def test_check_future_refuses_now_and_the_past(when: datetime) -> None:
    with pytest.raises(ScheduleError, match="must be in the future"):
        check_future(when, NOW)


@pytest.mark.parametrize("when", [NOW + timedelta(microseconds=1), NOW + timedelta(minutes=1),
                                  NOW + timedelta(days=365)])
def test_check_future_accepts_the_future(when: datetime) -> None:
    assert check_future(when, NOW) is None

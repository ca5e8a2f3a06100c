"""Send windows and local delivery times (docs/ARCHITECTURE.md): wall clocks in named zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.windows import (
    ALL_DAYS,
    WEEKDAYS,
    Window,
    WindowError,
    closes_at,
    describe,
    is_open,
    is_zone,
    local_release,
    next_open,
    parse_hhmm,
    picker_zones,
    wall_to_utc,
    zone,
)

BERLIN = "Europe/Berlin"
OFFICE = Window(8 * 60, 20 * 60, WEEKDAYS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_open_inside_the_window_in_the_organisations_zone():
    # Monday 30 November 2026: Berlin is UTC+1.
    assert not is_open(OFFICE, utc(2026, 11, 30, 6, 59), BERLIN)  # 07:59 Berlin
    assert is_open(OFFICE, utc(2026, 11, 30, 7, 0), BERLIN)  # 08:00
    assert is_open(OFFICE, utc(2026, 11, 30, 18, 59), BERLIN)  # 19:59
    assert not is_open(OFFICE, utc(2026, 11, 30, 19, 0), BERLIN)  # 20:00: the end is exclusive
    assert closes_at(OFFICE, utc(2026, 11, 30, 12, 0), BERLIN) == utc(2026, 11, 30, 19, 0)
    assert closes_at(OFFICE, utc(2026, 11, 30, 20, 0), BERLIN) is None


def test_next_open_skips_the_weekend():
    friday_evening = utc(2026, 12, 4, 19, 30)  # 20:30 Berlin
    assert next_open(OFFICE, friday_evening, BERLIN) == utc(2026, 12, 7, 7, 0)  # Monday 08:00
    inside = utc(2026, 12, 7, 9, 0)
    assert next_open(OFFICE, inside, BERLIN) == inside


def test_the_window_follows_daylight_saving_time():
    # Summer: Berlin is UTC+2, so 08:00 is 06:00 UTC.
    assert next_open(OFFICE, utc(2026, 7, 1, 3, 0), BERLIN) == utc(2026, 7, 1, 6, 0)
    # Sunday 29 March 2026 02:00 -> 03:00. A 02:30-04:00 window that day opens at 03:00 CEST.
    night = Window(2 * 60 + 30, 4 * 60, ALL_DAYS)
    assert next_open(night, utc(2026, 3, 28, 23, 0), BERLIN) == utc(2026, 3, 29, 1, 0)
    # Sunday 25 October 2026 03:00 -> 02:00: 00:00-04:00 lasts five hours that night.
    early = Window(0, 4 * 60, ALL_DAYS)
    start = next_open(early, utc(2026, 10, 24, 21, 0), BERLIN)
    end = closes_at(early, start, BERLIN)
    assert start == utc(2026, 10, 24, 22, 0) and end == utc(2026, 10, 25, 3, 0)


def test_a_window_past_midnight_belongs_to_the_day_it_opens():
    night = Window(22 * 60, 6 * 60, 1)  # Monday 22:00 to Tuesday 06:00
    assert is_open(night, utc(2026, 12, 1, 4, 0), BERLIN)  # Tuesday 05:00 Berlin
    assert not is_open(night, utc(2026, 12, 2, 4, 0), BERLIN)  # Wednesday 05:00: Tuesday's is off
    whole_day = Window(0, 24 * 60, 64)  # Sundays
    assert is_open(whole_day, utc(2026, 12, 6, 22, 59), BERLIN)  # Sunday 23:59
    assert not is_open(whole_day, utc(2026, 12, 6, 23, 0), BERLIN)  # Monday 00:00


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 1439), st.integers(1, 1440), st.integers(1, 127),
       st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
       st.sampled_from([BERLIN, "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]))
def test_next_open_is_open_and_nothing_before_it_is(start, end, days, naive, name):
    if start == end:
        return
    window = Window(start, end, days)
    at = naive.replace(tzinfo=UTC)
    opens = next_open(window, at, name)
    assert opens >= at and is_open(window, opens, name)
    if opens > at:  # just before the opening it was closed (checked a minute apart)
        assert not is_open(window, max(at, opens - timedelta(minutes=1)), name)
    closes = closes_at(window, opens, name)
    assert closes is not None and closes > opens
    assert not is_open(window, closes, name) or closes_at(window, closes, name) != closes


def test_local_release_reads_the_send_time_in_each_zone():
    send_at = utc(2026, 12, 1, 8, 0)  # 09:00 in Berlin
    assert local_release(send_at, BERLIN, BERLIN) == send_at
    assert local_release(send_at, BERLIN, "America/New_York") == utc(2026, 12, 1, 14, 0)
    assert local_release(send_at, BERLIN, "Asia/Tokyo") == utc(2026, 12, 1, 0, 0)
    assert local_release(send_at, BERLIN, "Asia/Kolkata") == utc(2026, 12, 1, 3, 30)


def test_wall_times_in_a_gap_move_to_its_end_and_repeated_ones_take_the_first():
    tz = zone("America/New_York")
    assert wall_to_utc(datetime(2026, 3, 8, 2, 30), tz) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    assert wall_to_utc(datetime(2026, 11, 1, 1, 30), tz) == utc(2026, 11, 1, 5, 30)  # EDT, first


def test_parsing_and_refusals():
    assert parse_hhmm("08:00") == 480 and parse_hhmm("8:05") == 485
    assert parse_hhmm("24:00", end=True) == 1440
    for bad in ("24:00", "25:00", "12:60", "noon", "", "1:2:3", "١٢:٠٠"):
        with pytest.raises(WindowError):
            parse_hhmm(bad)
    with pytest.raises(WindowError):
        Window(480, 480)
    with pytest.raises(WindowError):
        Window(480, 600, 0)
    with pytest.raises(WindowError):
        zone("Mars/Olympus_Mons")
    assert describe(OFFICE) == "08:00-20:00, weekdays"
    assert describe(Window(540, 1020, 1 | 4 | 16)) == "09:00-17:00, Mon, Wed, Fri"


def test_picker_zones_common_first_without_deprecated_aliases():
    zones = picker_zones()
    assert zones[0] == "UTC" and zones.index(BERLIN) < zones.index("Africa/Abidjan")
    assert len(zones) == len(set(zones))
    for alias in ("US/Eastern", "Etc/GMT+5", "Asia/Calcutta", "Europe/Kiev", "GMT", "EST5EDT",
                  "America/Buenos_Aires", "Asia/Saigon", "Australia/ACT", "Japan"):
        assert alias not in zones
    for name in ("Asia/Kolkata", "Europe/Kyiv", "America/Argentina/Buenos_Aires",
                 "Pacific/Chatham", "America/Indiana/Indianapolis"):
        assert name in zones
    rest = zones[zones.index("Pacific/Auckland") + 1:]
    assert list(rest) == sorted(rest)


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory", "posix/Europe/Paris",
                                  "right/UTC", "", "Europe/Nowhere", "x" * 65])
def test_names_that_are_not_places_are_refused(name):
    assert not is_zone(name)
    with pytest.raises(WindowError):
        zone(name)


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"])
def test_places_are_zones(name):
    assert is_zone(name)

"""Numeric settings are parsed strictly: plain finite numbers of the right kind, inside the range."""

from __future__ import annotations

import math

import pytest

from app.domain.bounds import Bound, OutOfBounds, format_number

WHOLE = Bound(int, 1, 20_000)
RATE = Bound(float, 0, 1)


@pytest.mark.parametrize("raw,expected", [
    ("1", 1), ("20000", 20_000), ("  5 ", 5), ("+7", 7), (7, 7), (7.0, 7), ("0020", 20),
])
def test_whole_numbers_in_range(raw, expected):
    value = WHOLE.parse(raw, "Batch size")
    assert value == expected and type(value) is int


@pytest.mark.parametrize("raw", [
    "0", "20001", "-1", "1.5", "5.0", "1e3", "", "   ", "abc", "inf", "-inf", "nan", "1e400",
    str(2**31), str(2**63), "9" * 5000, "1_000", "1,000", "0x10", "٣", 1.5, math.inf, math.nan,
    2**63, True, None, [5], "5\n6",
])
def test_whole_numbers_refused(raw):
    with pytest.raises(OutOfBounds) as info:
        WHOLE.parse(raw, "Batch size")
    assert str(info.value).startswith("Batch size: ")
    assert str(info.value).endswith("enter a whole number from 1 to 20,000.")


@pytest.mark.parametrize("raw,expected", [
    ("0", 0.0), ("1", 1.0), (".5", 0.5), ("0.005", 0.005), ("5e-3", 0.005), (" 0.25 ", 0.25),
    (0, 0.0), (1, 1.0), ("-0", 0.0), (0.1, 0.1),
])
def test_decimals_in_range(raw, expected):
    value = RATE.parse(raw, "Bounce rate")
    assert value == expected and type(value) is float and math.copysign(1, value) == 1


@pytest.mark.parametrize("raw", [
    "inf", "-inf", "Infinity", "nan", "NaN", "1e400", "-1e400", "1.0000001", "-0.001", "2", "",
    "abc", "1/2", "0x1p-2", str(2**63), math.inf, -math.inf, math.nan, 1e400, 2**31, True,
])
def test_decimals_refused(raw):
    with pytest.raises(OutOfBounds, match=r"^Bounce rate: .* enter a number from 0 to 1\.$"):
        RATE.parse(raw, "Bounce rate")


def test_message_quotes_the_value_and_shortens_long_text():
    with pytest.raises(OutOfBounds) as info:
        WHOLE.parse("x" * 100, "Batch size")
    assert '"' + "x" * 40 + '…"' in str(info.value)
    with pytest.raises(OutOfBounds, match="an empty value"):
        WHOLE.parse("", "Batch size")


def test_format_number():
    assert [format_number(v) for v in (0, 1, 20_000, 1e9, 0.5, 0.005, 10_000.0)] == [
        "0", "1", "20,000", "1,000,000,000", "0.5", "0.005", "10,000"]

"""Field types shared by API models: each refuses what the database could not store, by name.

Times are ISO 8601 with a zone (a time without one is a validation error) and come back in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

from app.domain.eligibility import address_problem
from app.domain.schedule import ScheduleError, zone_info
from app.inputs import MAX_ID


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _address(value: str) -> str:
    problem = address_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _zone(value: str) -> str:
    if value:
        try:
            zone_info(value)
        except ScheduleError:
            raise ValueError("is not an IANA time zone (e.g. Europe/Paris)") from None
    return value


def _utc(value: datetime) -> datetime:
    try:
        when = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if when.year < 1900:
        raise ValueError("is before 1900")
    return when


Id = Annotated[int, Field(ge=1, lt=MAX_ID)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254), AfterValidator(_address),
                  Field(description="An email address", examples=["anna@example.org"])]
Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_no_nul)]
Zone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64), AfterValidator(_zone),
                 Field(description="IANA time zone, e.g. Europe/Paris; empty for the organisation's")]
Time = Annotated[AwareDatetime, AfterValidator(_utc),
                 Field(description="ISO 8601 with a zone, e.g. 2026-11-30T14:05:00+01:00")]
FieldKey = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_nul)]
FieldValue = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)] | \
    Annotated[float, Field(allow_inf_nan=False)] | int | bool | None

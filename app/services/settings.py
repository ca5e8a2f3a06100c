"""Admin-editable settings, falling back to the environment configuration.

Each setting has a type and a default taken from app.config; the settings page writes overrides
into the settings table, so workers on every machine read the same values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import current_app

from app.config import LIMITS
from app.domain.bounds import Bound, OutOfBounds
from app.extensions import db
from app.models import Setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettingSpec:
    key: str
    config_key: str
    label: str

    @property
    def bound(self) -> Bound:
        """The kind and range, shared with the environment variable of the same setting."""
        return LIMITS[self.config_key]

    @property
    def kind(self) -> type:
        return self.bound.kind

    @property
    def minimum(self) -> float:
        return self.bound.minimum

    @property
    def maximum(self) -> float:
        return self.bound.maximum

    def parse(self, raw: Any) -> int | float:
        """The value as stored, or SettingError naming the setting and its range."""
        try:
            return self.bound.parse(raw, self.label)
        except OutOfBounds as exc:
            raise SettingError(str(exc)) from exc


SPECS: dict[str, SettingSpec] = {
    s.key: s
    for s in [
        SettingSpec("batch_size", "BATCH_SIZE", "Batch size"),
        SettingSpec("rate_per_second", "SMTP_RATE_PER_SECOND", "Messages per second (0: no limit)"),
        SettingSpec("inactivity_days", "INACTIVITY_DAYS", "Suppress after days without transaction (0: never)"),
        SettingSpec("bounce_rate_limit", "BOUNCE_RATE_LIMIT", "Interrupt at bounce rate"),
        SettingSpec("complaint_rate_limit", "COMPLAINT_RATE_LIMIT", "Interrupt at complaint rate"),
        SettingSpec("threshold_min_sample", "THRESHOLD_MIN_SAMPLE", "Minimum sample before interrupting"),
        SettingSpec("monthly_quota", "MONTHLY_QUOTA", "Monthly sending quota (0: unlimited)"),
        SettingSpec("defer_max_hours", "DEFER_MAX_HOURS", "Retry deferred recipients for hours"),
        SettingSpec("outage_minutes", "OUTAGE_MINUTES", "Interrupt after minutes of refusals only"),
        SettingSpec("conversion_days", "CONVERSION_DAYS",
                    "Conversion window: days after a click a transaction counts"),
    ]
}


class SettingError(ValueError):
    """A setting value was refused; the message says why."""


def get(key: str) -> Any:
    """The effective value of a setting: the stored override, else the configuration.

    An override outside the setting's range (stored before ranges were enforced, or written to
    the table by hand) is ignored with a warning, so a worker never runs with inf or NaN.
    """
    spec = SPECS[key]
    row = db.session.get(Setting, key)
    if row is not None:
        try:
            return spec.parse(row.value)
        except SettingError as exc:
            log.warning("ignoring the stored setting %s: %s", key, exc)
    return spec.kind(current_app.config[spec.config_key])


def parse_all(raw: dict[str, Any]) -> tuple[dict[str, int | float], dict[str, str]]:
    """Check a whole form of settings: (values, errors by key); a missing key is an error."""
    values: dict[str, int | float] = {}
    errors: dict[str, str] = {}
    for key, spec in SPECS.items():
        try:
            values[key] = spec.parse(raw.get(key, ""))
        except SettingError as exc:
            errors[key] = str(exc)
    return values, errors


def set(key: str, raw: Any) -> Any:  # noqa: A001 - the natural name for the use case
    """Validate and store an override; returns the stored value. Nothing is stored on error."""
    spec = SPECS.get(key)
    if spec is None:
        raise SettingError(f"unknown setting {key!r}")
    value = spec.parse(raw)
    _store(key, value)
    return value


def set_many(raw: dict[str, Any]) -> dict[str, int | float]:
    """Validate every setting first and store them together, or none (SettingError lists why)."""
    values, errors = parse_all(raw)
    if errors:
        raise SettingError(" ".join(errors.values()))
    for key, value in values.items():
        _store(key, value)
    return values


def _store(key: str, value: int | float) -> None:
    row = db.session.get(Setting, key)
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value


def all_values() -> dict[str, Any]:
    return {key: get(key) for key in SPECS}

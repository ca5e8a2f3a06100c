"""Admin-editable settings, falling back to the environment configuration.

Each setting has a type and a default taken from app.config; the settings page writes overrides
into the settings table, so workers on every machine read the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from app.config import HARD_BATCH_CAP
from app.extensions import db
from app.models import Setting


@dataclass(frozen=True)
class SettingSpec:
    key: str
    config_key: str
    kind: type
    label: str
    minimum: float | None = None
    maximum: float | None = None


SPECS: dict[str, SettingSpec] = {
    s.key: s
    for s in [
        SettingSpec("batch_size", "BATCH_SIZE", int, "Batch size", 1, HARD_BATCH_CAP),
        SettingSpec("rate_per_second", "SMTP_RATE_PER_SECOND", float, "Messages per second (0: no limit)", 0),
        SettingSpec("inactivity_days", "INACTIVITY_DAYS", int, "Suppress after days without transaction (0: never)", 0),
        SettingSpec("bounce_rate_limit", "BOUNCE_RATE_LIMIT", float, "Interrupt at bounce rate", 0, 1),
        SettingSpec("complaint_rate_limit", "COMPLAINT_RATE_LIMIT", float, "Interrupt at complaint rate", 0, 1),
        SettingSpec("threshold_min_sample", "THRESHOLD_MIN_SAMPLE", int, "Minimum sample before interrupting", 1),
        SettingSpec("monthly_quota", "MONTHLY_QUOTA", int, "Monthly sending quota (0: unlimited)", 0),
    ]
}


class SettingError(ValueError):
    """A setting value was refused; the message says why."""


def get(key: str) -> Any:
    """The effective value of a setting: the stored override, else the configuration."""
    spec = SPECS[key]
    row = db.session.get(Setting, key)
    if row is not None:
        return spec.kind(row.value)
    return spec.kind(current_app.config[spec.config_key])


def set(key: str, raw: Any) -> Any:  # noqa: A001 - the natural name for the use case
    """Validate and store an override; returns the stored value."""
    spec = SPECS.get(key)
    if spec is None:
        raise SettingError(f"unknown setting {key!r}")
    try:
        value = spec.kind(raw)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"{spec.label}: {raw!r} is not a valid number") from exc
    if spec.minimum is not None and value < spec.minimum:
        raise SettingError(f"{spec.label} must be at least {spec.minimum:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise SettingError(f"{spec.label} must be at most {spec.maximum:g}")
    row = db.session.get(Setting, key)
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value
    db.session.commit()
    return value


def all_values() -> dict[str, Any]:
    return {key: get(key) for key in SPECS}

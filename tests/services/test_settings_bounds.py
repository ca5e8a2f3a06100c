"""Every numeric setting is finite and inside its stated range, from the settings service and
from the environment; refused values name the setting and its range and change nothing."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from app import config as app_config
from app import create_app
from app.config import LIMITS, Config, ConfigError
from app.extensions import db
from app.models import Setting
from app.services import settings

# key: (label as messages name it, range as messages state it, good values with what is stored)
TABLE = {
    "batch_size": ("Batch size", "a whole number from 1 to 20,000",
                   [("1", 1), ("20000", 20_000), ("  5 ", 5), (750, 750)]),
    "rate_per_second": ("Messages per second (0: no limit)", "a number from 0 to 10,000",
                        [("0", 0.0), ("10000", 10_000.0), ("12.5", 12.5), ("  5 ", 5.0)]),
    "inactivity_days": ("Suppress after days without transaction (0: never)",
                        "a whole number from 0 to 36,500",
                        [("0", 0), ("1", 1), ("36500", 36_500), ("  5 ", 5)]),
    "bounce_rate_limit": ("Interrupt at bounce rate", "a number from 0 to 1",
                          [("0", 0.0), ("1", 1.0), ("0.08", 0.08), ("5e-2", 0.05)]),
    "complaint_rate_limit": ("Interrupt at complaint rate", "a number from 0 to 1",
                             [("0", 0.0), ("1", 1.0), ("0.002", 0.002)]),
    "threshold_min_sample": ("Minimum sample before interrupting", "a whole number from 1 to 1,000,000",
                             [("1", 1), ("1000000", 1_000_000), ("  5 ", 5)]),
    "monthly_quota": ("Monthly sending quota (0: unlimited)", "a whole number from 0 to 1,000,000,000",
                      [("0", 0), ("1000000000", 10**9), ("  5 ", 5)]),
    "defer_max_hours": ("Retry deferred recipients for hours", "a number from 0 to 720",
                        [("0", 0.0), ("720", 720.0), ("1.5", 1.5)]),
    "outage_minutes": ("Interrupt after minutes of refusals only", "a number from 0.01 to 1,440",
                       [("0.01", 0.01), ("1440", 1440.0), ("5", 5.0)]),
    "conversion_days": ("Conversion window: days after a click a transaction counts",
                        "a whole number from 1 to 90", [("1", 1), ("90", 90), (" 14 ", 14)]),
}
COMMON_BAD = ["inf", "-inf", "nan", "1e400", str(2**31), str(2**63), "-1", "", "abc", "Infinity",
              math.inf, math.nan, 2**63, None]
# Values just outside each range, and values of the wrong kind.
EDGE_BAD = {
    "batch_size": ["0", "20001", "1.5", "5.0"],
    "rate_per_second": ["10000.5", "-0.1"],
    "inactivity_days": ["36501", "7.5"],
    "bounce_rate_limit": ["1.01", "  5 ", "-0.0001"],
    "complaint_rate_limit": ["1.5", "  5 "],
    "threshold_min_sample": ["0", "1000001", "2.5"],
    "monthly_quota": ["1000000001", "0.5"],
    "defer_max_hours": ["720.5", "-1"],
    "outage_minutes": ["0", "1441"],
    "conversion_days": ["0", "91", "7.5"],
}

GOOD = [(key, raw, stored) for key, (_, _, goods) in TABLE.items() for raw, stored in goods]
BAD = [(key, raw) for key in TABLE for raw in COMMON_BAD + EDGE_BAD[key]]


def test_every_setting_is_in_the_table():
    assert set(TABLE) == set(settings.SPECS) == set(EDGE_BAD)


@pytest.mark.parametrize("key,raw,stored", GOOD)
def test_good_values_are_stored(app, key, raw, stored):
    assert settings.set(key, raw) == stored
    assert settings.get(key) == stored and type(settings.get(key)) is type(stored)
    row = db.session.get(Setting, key)
    assert row is not None and row.value == stored


@pytest.mark.parametrize("key,raw", BAD)
def test_bad_values_are_refused_naming_the_setting_and_its_range(app, key, raw):
    label, described, goods = TABLE[key]
    before = settings.get(key)
    with pytest.raises(settings.SettingError) as info:
        settings.set(key, raw)
    message = str(info.value)
    assert message.startswith(f"{label}: ") and message.endswith(f"enter {described}.")
    assert db.session.get(Setting, key) is None
    assert settings.get(key) == before


def test_a_refused_value_leaves_the_previous_override(app):
    settings.set("batch_size", "300")
    with pytest.raises(settings.SettingError):
        settings.set("batch_size", "inf")
    db.session.expire_all()
    assert settings.get("batch_size") == 300


def test_set_many_stores_all_or_nothing(app):
    good = {key: goods[0][0] for key, (_, _, goods) in TABLE.items()}
    with pytest.raises(settings.SettingError, match="Batch size"):
        settings.set_many({**good, "batch_size": "nan"})
    assert db.session.execute(select(Setting)).first() is None
    stored = settings.set_many(good)
    assert stored == {key: goods[0][1] for key, (_, _, goods) in TABLE.items()}


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, 2**63, -1, "abc", None])
def test_a_stored_override_out_of_range_is_ignored(app, bad):
    """A value stored before ranges were enforced (or by hand) must not reach a worker."""
    app.config["BOUNCE_RATE_LIMIT"] = 0.1
    app.config["BATCH_SIZE"] = 400
    db.session.add_all([Setting(key="bounce_rate_limit", value=bad), Setting(key="batch_size", value=bad)])
    db.session.commit()
    db.session.expire_all()
    assert settings.get("bounce_rate_limit") == 0.1
    assert settings.get("batch_size") == 400


# The environment variable of each bounded configuration value, and its LIMITS key.
ENV = {
    "BATCH_SIZE": "BATCH_SIZE",
    "SMTP_RATE_PER_SECOND": "SMTP_RATE_PER_SECOND",
    "SENDBOARD_INACTIVITY_DAYS": "INACTIVITY_DAYS",
    "SENDBOARD_BOUNCE_RATE_LIMIT": "BOUNCE_RATE_LIMIT",
    "SENDBOARD_COMPLAINT_RATE_LIMIT": "COMPLAINT_RATE_LIMIT",
    "SENDBOARD_THRESHOLD_MIN_SAMPLE": "THRESHOLD_MIN_SAMPLE",
    "SENDBOARD_MONTHLY_QUOTA": "MONTHLY_QUOTA",
    "SENDBOARD_DEFER_MAX_HOURS": "DEFER_MAX_HOURS",
    "SENDBOARD_DEFER_UNIT_SECONDS": "DEFER_UNIT_SECONDS",
    "SENDBOARD_OUTAGE_MINUTES": "OUTAGE_MINUTES",
    "SENDBOARD_CONVERSION_DAYS": "CONVERSION_DAYS",
    "SMTP_CONNECTIONS": "SMTP_CONNECTIONS",
    "SMTP_PORT": "SMTP_PORT",
    "SENDBOARD_CAPTURE_PORT": "CAPTURE_SMTP_PORT",
    "BOUNCE_IMAP_PORT": "BOUNCE_IMAP_PORT",
}


def test_every_limit_has_an_environment_variable():
    assert set(ENV.values()) == set(LIMITS)


@pytest.mark.parametrize("name", sorted(ENV) + ["SENDBOARD_MAX_UPLOAD_MB"])
@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e400", str(2**31), str(2**63), "-1", "abc", "1,5"])
def test_a_bad_environment_value_stops_the_app_with_its_name_and_range(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError) as info:
        Config()
    message = str(info.value)
    assert message.startswith(f"environment variable {name}: ") and " from " in message


@pytest.mark.parametrize("name,raw,key,expected", [
    ("BATCH_SIZE", " 250 ", "BATCH_SIZE", 250),
    ("SENDBOARD_BOUNCE_RATE_LIMIT", "0.2", "BOUNCE_RATE_LIMIT", 0.2),
    ("SMTP_RATE_PER_SECOND", "12", "SMTP_RATE_PER_SECOND", 12.0),
    ("SMTP_PORT", "65535", "SMTP_PORT", 65_535),
    ("SENDBOARD_MONTHLY_QUOTA", "", "MONTHLY_QUOTA", 0),  # empty: the default
    ("SENDBOARD_MAX_UPLOAD_MB", "2", "MAX_CONTENT_LENGTH", 2 * 1024 * 1024),
])
def test_good_environment_values(monkeypatch, name, raw, key, expected):
    monkeypatch.setenv(name, raw)
    assert getattr(Config(), key) == expected


@pytest.mark.parametrize("key,value", [("BATCH_SIZE", 0), ("BATCH_SIZE", 20_001),
                                       ("SMTP_RATE_PER_SECOND", math.inf), ("SMTP_PORT", 70_000),
                                       ("BOUNCE_RATE_LIMIT", math.nan)])
def test_check_config_refuses_values_out_of_range(tmp_path, key, value):
    config = app_config.TestConfig(str(tmp_path))
    setattr(config, key, value)
    with pytest.raises(ConfigError, match=f"^{key}: "):
        create_app(config)

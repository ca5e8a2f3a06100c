"""Configuration read from the environment, with safe defaults for a local install."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.domain.bounds import Bound, OutOfBounds
from app.providers.smtp import SECURITY_MODES

LOCAL_WEBHOOK_SECRET_FILE = "generic-webhook-secret"


def local_webhook_secret(instance: Path, *, create: bool) -> str:
    """The generic webhook's secret kept under instance/ for a local install, so `sendboard run`
    and `sendboard simulate` agree on it without any setting ("" when there is none)."""
    path = Path(instance) / LOCAL_WEBHOOK_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return ""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()

DEFAULT_SECRET_KEY = "dev-only-change-me"
HARD_BATCH_CAP = 20_000
MAX_RATE_PER_SECOND = 10_000

_PORT = Bound(int, 1, 65_535)
# The range of every numeric value, by configuration key. The environment and the settings page
# are held to the same ranges, so a worker never meets inf, NaN or a number no SMTP server takes.
LIMITS: dict[str, Bound] = {
    "BATCH_SIZE": Bound(int, 1, HARD_BATCH_CAP),
    "SMTP_RATE_PER_SECOND": Bound(float, 0, MAX_RATE_PER_SECOND),  # 0: unlimited
    "INACTIVITY_DAYS": Bound(int, 0, 36_500),  # 0: never
    "BOUNCE_RATE_LIMIT": Bound(float, 0, 1),
    "COMPLAINT_RATE_LIMIT": Bound(float, 0, 1),
    "THRESHOLD_MIN_SAMPLE": Bound(int, 1, 1_000_000),
    "MONTHLY_QUOTA": Bound(int, 0, 1_000_000_000),  # 0: unlimited
    "DEFER_MAX_HOURS": Bound(float, 0, 24 * 30),  # how long a deferred recipient is retried
    "DEFER_UNIT_SECONDS": Bound(float, 0.01, 3_600),  # the backoff's minute (shorter in benches)
    "OUTAGE_MINUTES": Bound(float, 0.01, 24 * 60),  # every attempt refused this long: interrupt
    "SMTP_CONNECTIONS": Bound(int, 1, 50),  # SMTP connections a worker sends one batch over
    "SMTP_PORT": _PORT,
    "CAPTURE_SMTP_PORT": _PORT,
    "BOUNCE_IMAP_PORT": _PORT,
    "CONVERSION_DAYS": Bound(int, 1, 90),  # a transaction this long after a click is a conversion
}
MAX_UPLOAD_MB = Bound(int, 1, 10_000)
CONVERSION_DAYS = LIMITS["CONVERSION_DAYS"]
PROVIDER_RATE = LIMITS["SMTP_RATE_PER_SECOND"]


class ConfigError(RuntimeError):
    """A configuration value the app cannot run with; raised when the app is built."""


def _number(name: str, key: str | Bound, default: int | float) -> Any:
    """The environment variable `name`, held to the range of `key` (a LIMITS key or a Bound)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    bound = LIMITS[key] if isinstance(key, str) else key
    try:
        return bound.parse(raw, name)
    except OutOfBounds as exc:
        raise ConfigError(f"environment variable {exc}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _switch(name: str, default: bool) -> bool:
    """An on/off setting where a typo must not silently mean off (a safety check, say)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise RuntimeError(f"{name} must be on or off (1/0, true/false, yes/no), got {raw!r}")


def instance_dir() -> Path:
    """Where the embedded SQLite file, Redis socket and captured mail live."""
    return Path(os.environ.get("SENDBOARD_INSTANCE", Path.cwd() / "instance")).resolve()


class Config:
    """Settings for a running deployment; every value can be set from the environment."""

    def __init__(self) -> None:
        inst = instance_dir()
        self.INSTANCE_DIR = str(inst)
        self.ENV = os.environ.get("SENDBOARD_ENV", "development")
        self.SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
        self.SQLALCHEMY_DATABASE_URI = os.environ.get(
            "DATABASE_URL", f"sqlite:///{inst / 'sendboard.db'}"
        )
        self.SQLALCHEMY_ENGINE_OPTIONS: dict[str, object] = {"pool_pre_ping": True}
        # Empty means "start the embedded Redis under instance/".
        self.REDIS_URL = os.environ.get("REDIS_URL", "")
        self.BASE_URL = os.environ.get("SENDBOARD_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
        self.SMTP_HOST = os.environ.get("SMTP_HOST", "")  # empty: the local capture server
        self.SMTP_PORT = _number("SMTP_PORT", "SMTP_PORT", 2525)
        self.SMTP_USERNAME = os.environ.get("SMTP_USERNAME", "")
        self.SMTP_PASSWORD = os.environ.get("SMTP_PASSWORD", "")
        self.SMTP_SECURITY = os.environ.get("SMTP_SECURITY", "none").strip().lower()  # none | starttls | ssl
        # The relay's TLS certificate is checked against these CAs (a PEM file) instead of the
        # system's: for a relay with a private CA. Empty: the system's CAs.
        self.SMTP_CA_FILE = os.environ.get("SMTP_CA_FILE", "").strip()
        # Off accepts any certificate: unsafe (the mail and the password can be intercepted).
        self.SMTP_TLS_VERIFY = _switch("SMTP_TLS_VERIFY", True)
        self.SMTP_RATE_PER_SECOND = _number("SMTP_RATE_PER_SECOND", "SMTP_RATE_PER_SECOND", 0.0)  # 0: unlimited
        # Connections a worker opens to the relay of the environment (a provider has its own).
        self.SMTP_CONNECTIONS = _number("SMTP_CONNECTIONS", "SMTP_CONNECTIONS", 4)
        self.CAPTURE_SMTP_PORT = _number("SENDBOARD_CAPTURE_PORT", "CAPTURE_SMTP_PORT", 2525)
        self.BOUNCE_DOMAIN = os.environ.get("SENDBOARD_BOUNCE_DOMAIN", "bounces.sendboard.local")
        # The organisation's zone: send windows are read in it, and contacts without a zone of
        # their own get local delivery by it.
        self.TIME_ZONE = os.environ.get("SENDBOARD_TIME_ZONE", "UTC").strip() or "UTC"
        self.BATCH_SIZE = _number("BATCH_SIZE", "BATCH_SIZE", 500)
        self.INACTIVITY_DAYS = _number("SENDBOARD_INACTIVITY_DAYS", "INACTIVITY_DAYS", 730)
        self.BOUNCE_RATE_LIMIT = _number("SENDBOARD_BOUNCE_RATE_LIMIT", "BOUNCE_RATE_LIMIT", 0.10)
        self.COMPLAINT_RATE_LIMIT = _number("SENDBOARD_COMPLAINT_RATE_LIMIT", "COMPLAINT_RATE_LIMIT", 0.005)
        self.THRESHOLD_MIN_SAMPLE = _number("SENDBOARD_THRESHOLD_MIN_SAMPLE", "THRESHOLD_MIN_SAMPLE", 200)
        self.MONTHLY_QUOTA = _number("SENDBOARD_MONTHLY_QUOTA", "MONTHLY_QUOTA", 0)  # 0: unlimited
        # Deferral: a recipient refused for now (4xx) is tried again on a backoff of 1, 5, 15, 60
        # minutes then hourly (one "minute" lasts DEFER_UNIT_SECONDS), for DEFER_MAX_HOURS, then it
        # is a Soft bounce. A relay that refuses every attempt for OUTAGE_MINUTES interrupts.
        self.DEFER_MAX_HOURS = _number("SENDBOARD_DEFER_MAX_HOURS", "DEFER_MAX_HOURS", 24.0)
        self.DEFER_UNIT_SECONDS = _number("SENDBOARD_DEFER_UNIT_SECONDS", "DEFER_UNIT_SECONDS", 60.0)
        self.OUTAGE_MINUTES = _number("SENDBOARD_OUTAGE_MINUTES", "OUTAGE_MINUTES", 5.0)
        # A transaction within CONVERSION_DAYS after a click on a mailing's link is its conversion.
        self.CONVERSION_DAYS = _number("SENDBOARD_CONVERSION_DAYS", CONVERSION_DAYS, 7)
        # Provider webhooks and the bounce mailbox (see README, "Responses and tracking").
        self.SENDGRID_WEBHOOK_PUBLIC_KEY = os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY", "")
        self.SENDBOARD_WEBHOOK_BASIC_USER = os.environ.get("SENDBOARD_WEBHOOK_BASIC_USER", "")
        self.SENDBOARD_WEBHOOK_BASIC_PASSWORD = os.environ.get("SENDBOARD_WEBHOOK_BASIC_PASSWORD", "")
        self.MAILGUN_WEBHOOK_SIGNING_KEY = os.environ.get("MAILGUN_WEBHOOK_SIGNING_KEY", "")
        self.SES_SNS_CERT_PEM = os.environ.get("SES_SNS_CERT_PEM", "")
        # Topic ARNs SES publishes to, comma-separated; with SNS signatures, empty refuses all.
        self.SES_SNS_TOPIC_ARNS = os.environ.get("SES_SNS_TOPIC_ARNS", "")
        self.GENERIC_WEBHOOK_SECRET = os.environ.get("GENERIC_WEBHOOK_SECRET", "")
        self.BOUNCE_IMAP_HOST = os.environ.get("BOUNCE_IMAP_HOST", "")
        self.BOUNCE_IMAP_PORT = _number("BOUNCE_IMAP_PORT", "BOUNCE_IMAP_PORT", 993)
        self.BOUNCE_IMAP_USER = os.environ.get("BOUNCE_IMAP_USER", "")
        self.BOUNCE_IMAP_PASSWORD = os.environ.get("BOUNCE_IMAP_PASSWORD", "")
        self.BOUNCE_IMAP_FOLDER = os.environ.get("BOUNCE_IMAP_FOLDER", "INBOX")
        self.WTF_CSRF_TIME_LIMIT = None
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = _bool("SENDBOARD_SECURE_COOKIES", self.ENV == "production")
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.MAX_CONTENT_LENGTH = _number("SENDBOARD_MAX_UPLOAD_MB", MAX_UPLOAD_MB, 200) * 1024 * 1024
        if self.SQLALCHEMY_DATABASE_URI.startswith("sqlite"):
            self.SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"timeout": 30}}



class TestConfig(Config):
    """Settings for the test suite: a throwaway database, no CSRF on plain form posts."""

    def __init__(self, instance: str | None = None) -> None:
        super().__init__()
        self.TESTING = True
        self.SECRET_KEY = "test-secret-key"
        self.WTF_CSRF_ENABLED = False
        if instance:
            self.INSTANCE_DIR = instance
            self.SQLALCHEMY_DATABASE_URI = os.environ.get(
                "TEST_DATABASE_URL", f"sqlite:///{Path(instance) / 'test.db'}"
            )
            if not self.SQLALCHEMY_DATABASE_URI.startswith("sqlite"):
                self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse settings that would be unsafe or impossible; called when the app is built."""
    if config.get("ENV") == "production" and config.get("SECRET_KEY") in {DEFAULT_SECRET_KEY, ""}:
        raise RuntimeError(
            "SECRET_KEY is the development default: set SECRET_KEY to a long random value "
            "before running with SENDBOARD_ENV=production"
        )
    for key, bound in LIMITS.items():
        if key in config:
            try:
                bound.parse(config[key], key)
            except OutOfBounds as exc:
                raise ConfigError(str(exc)) from exc
    from app.domain.windows import is_zone

    if not is_zone(str(config.get("TIME_ZONE", "UTC"))):
        raise ConfigError(f"SENDBOARD_TIME_ZONE must be an IANA time zone such as Europe/Berlin, "
                          f"got {str(config.get('TIME_ZONE'))[:64]!r}")
    security = config.get("SMTP_SECURITY", "none")
    if security not in SECURITY_MODES:
        raise RuntimeError(f"SMTP_SECURITY must be none, starttls or ssl, got {security!r}")
    ca_file = config.get("SMTP_CA_FILE") or ""
    if ca_file:
        try:
            ssl.create_default_context(cafile=ca_file)
        except OSError as exc:  # missing, unreadable, or no PEM certificate in it (ssl.SSLError)
            raise RuntimeError(
                f"SMTP_CA_FILE must be a PEM file of CA certificates; {ca_file!r} cannot be used: {exc}"
            ) from exc

"""Which SMTP server a mailing goes to: the default provider of the settings page, else the relay of
the environment (SMTP_HOST), else the local capture server. The answer is one frozen `Relay`,
read once per batch (docs/ARCHITECTURE.md, "Sending engine")."""

from __future__ import annotations

from dataclasses import dataclass, replace

from flask import current_app
from sqlalchemy import select

from app.extensions import db
from app.providers.smtp import SmtpSettings


@dataclass(frozen=True)
class Relay:
    """An SMTP server and how a worker may use it."""

    smtp: SmtpSettings  # with its certificate checks settled: usable outside an app context
    rate_key: str  # the key its messages-per-second limit is counted under, by every worker
    rate: float  # messages per second (0: no limit)
    connections: int  # SMTP connections one worker sends a batch over at once

    @property
    def label(self) -> str:
        return self.smtp.label


def default_relay() -> Relay:
    """The relay mail goes out through now (read in an app context)."""
    from app.models import Provider
    from app.services import settings

    provider = db.session.execute(
        select(Provider).where(Provider.is_default.is_(True)).limit(1)
    ).scalar_one_or_none()
    cfg = current_app.config
    rate = float(settings.get("rate_per_second"))
    if provider is not None:
        s = SmtpSettings(provider.host, provider.port, provider.security, provider.username,
                         provider.password)
        relay = Relay(s, f"provider:{provider.id}", provider.rate_per_second or rate,
                      _connections(provider.connections))
    else:
        if cfg.get("SMTP_HOST"):
            s = SmtpSettings(cfg["SMTP_HOST"], int(cfg["SMTP_PORT"]), cfg["SMTP_SECURITY"],
                             cfg["SMTP_USERNAME"], cfg["SMTP_PASSWORD"])
        else:
            s = SmtpSettings("127.0.0.1", int(cfg["CAPTURE_SMTP_PORT"]))
        relay = Relay(s, f"smtp:{s.host}:{s.port}", rate,
                      _connections(cfg.get("SMTP_CONNECTIONS", 4)))
    ca_file, verify = relay.smtp.trust()  # the deployment's CA file and verify switch, settled
    return replace(relay, smtp=replace(relay.smtp, ca_file=ca_file, verify=verify))


def _connections(value: object) -> int:
    """A stored count held to 1..50 (app/config.py LIMITS), whatever the row holds."""
    count = value if isinstance(value, int) else 4
    return max(1, min(50, count))

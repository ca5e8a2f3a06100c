"""The configuration of one batch, read once when it is claimed and frozen for its whole life: the
relay and its connections, the rate, the batch size and quota, the deferral backoff and the outage
window, the thresholds that interrupt a mailing (docs/ARCHITECTURE.md, "Sending engine").

A setting changed on the settings page applies from the next batch on; no batch ever sees two
values of one setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app

from app.domain import backoff
from app.domain.thresholds import Thresholds
from app.providers.relay import Relay, default_relay
from app.services import settings


@dataclass(frozen=True)
class Deferral:
    """How deferred recipients are retried: the backoff's unit and the age at which to give up."""

    max_age: timedelta
    unit: timedelta
    outage: float  # seconds of nothing but temporary refusals before the mailing is interrupted

    @classmethod
    def current(cls) -> Deferral:
        return cls(
            max_age=timedelta(hours=float(settings.get("defer_max_hours"))),
            unit=timedelta(seconds=float(current_app.config["DEFER_UNIT_SECONDS"])),
            outage=60.0 * float(settings.get("outage_minutes")),
        )

    def decide(self, *, attempts: int, first: datetime | None, now: datetime,
               ) -> tuple[int, datetime, datetime | None]:
        """After one more temporary refusal: (attempts, first refusal, next attempt or None to
        give up and record a Soft bounce)."""
        attempts += 1
        first = first or now
        return attempts, first, backoff.next_attempt(
            attempt=attempts, first_deferred=first, now=now, max_age=self.max_age, unit=self.unit)


@dataclass(frozen=True)
class BatchConfig:
    """Everything a batch is sent and recorded by."""

    relay: Relay  # the SMTP server, its rate key and limit, its connections per worker
    batch_size: int
    monthly_quota: int  # 0: no quota
    deferral: Deferral
    limits: Thresholds  # bounce and complaint rates that interrupt the mailing
    inactivity: timedelta | None  # contacts without activity this long are not sent (None: never)
    secret: str  # signs the recipients' tokens in links and headers

    @classmethod
    def current(cls) -> BatchConfig:
        inactivity_days = int(settings.get("inactivity_days"))
        return cls(
            relay=default_relay(),
            batch_size=int(settings.get("batch_size")),
            monthly_quota=int(settings.get("monthly_quota")),
            deferral=Deferral.current(),
            limits=Thresholds(
                bounce_rate=float(settings.get("bounce_rate_limit")),
                complaint_rate=float(settings.get("complaint_rate_limit")),
                min_sample=int(settings.get("threshold_min_sample")),
            ),
            inactivity=timedelta(days=inactivity_days) if inactivity_days > 0 else None,
            secret=current_app.config["SECRET_KEY"],
        )

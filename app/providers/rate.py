"""How fast mail goes to an SMTP server (app/providers/relay.py chooses which): the
messages-per-second limit shared by all workers and connections (counted in Redis), lowered at
once when the server asks us to slow down and raised again step by step (multiplicative
decrease, additive increase).

A reply that means "slow down" (app/domain/backoff.py `is_slow_down`) halves the provider's
current rate (from its limit, or from what went out in the last second when it has none) at most
once a second; from then on the rate grows back by a twentieth of the rate before the cut every
RECOVER_EVERY seconds, until it is back to where it was and the cut is forgotten. The current rate
lives in Redis per provider, so every worker slows down together.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from redis import Redis

from app.providers.smtp import SmtpSettings

CUT = 0.5  # the rate after a slow-down reply, as a share of the rate before it
RECOVER_EVERY = 5.0  # seconds between two steps back up
RECOVER_STEPS = 20  # steps from zero back to the rate before the cut
MIN_RATE = 1.0  # messages per second never cut below
READ_EVERY = 0.5  # seconds a sender keeps the current rate before reading it again
COUNT_EVERY = 0.1  # seconds an unlimited sender keeps its count before adding it up in Redis


def provider_settings() -> tuple[SmtpSettings, str, float]:
    """The SMTP server to hand off to, its rate-limit key and its messages-per-second limit."""
    from app.providers.relay import default_relay

    relay = default_relay()
    return relay.smtp, relay.rate_key, relay.rate


def _cut_key(key: str) -> str:
    return f"sb:rate:cut:{key}"


@dataclass(frozen=True)
class Cut:
    floor: float  # the rate right after the cut
    before: float  # the rate before it
    at: float  # when (Unix time)

    def rate(self, now: float) -> float:
        """The current rate: the floor plus one step per RECOVER_EVERY seconds since the cut."""
        steps = int(max(now - self.at, 0.0) // RECOVER_EVERY)
        return min(self.before, self.floor + steps * self.before / RECOVER_STEPS)


def read_cut(redis: Redis, key: str) -> Cut | None:
    raw = redis.hgetall(_cut_key(key))
    if not raw:
        return None
    try:
        return Cut(float(raw[b"floor"]), float(raw[b"before"]), float(raw[b"at"]))
    except (KeyError, ValueError):
        return None


def current_rate(redis: Redis, key: str, limit: float, now: float | None = None) -> float:
    """Messages per second allowed now (0: no limit), the cut taken into account."""
    now = time.time() if now is None else now
    cut = read_cut(redis, key)
    if cut is None:
        return limit
    rate = cut.rate(now)
    if rate >= cut.before:
        redis.delete(_cut_key(key))  # recovered: the cut is forgotten
        return limit
    return rate if not limit else min(limit, rate)


def slow_down(redis: Redis, key: str, limit: float, now: float | None = None) -> float:
    """The server asked us to slow down: halve the current rate (once a second at most); returns
    the new rate."""
    now = time.time() if now is None else now
    cut = read_cut(redis, key)
    if cut is not None and now - cut.at < 1.0:
        return cut.floor
    if cut is not None:
        before = cut.rate(now)
    elif limit:
        before = limit
    else:  # no limit: what went out in the last second is the pace to halve
        window = int(now) - 1
        before = float(redis.get(f"sb:rate:{key}:{window}") or 0) or 2 * MIN_RATE
    floor = max(MIN_RATE, before * CUT)
    ceiling = cut.before if cut is not None else before
    redis.hset(_cut_key(key), mapping={"floor": floor, "before": max(ceiling, floor),
                                       "at": now})
    redis.expire(_cut_key(key), int(RECOVER_EVERY * RECOVER_STEPS) + 60)
    return floor


class RateLimiter:
    """Messages per second across all workers: a fixed window counted in Redis, at the current
    rate (the configured limit, or less after a slow-down reply).

    One limiter serves every connection of a batch (it is thread-safe). Without a limit nothing
    waits, and the messages are only counted, per second, so that a slow-down reply knows the
    pace it halves; the count goes to Redis at most every COUNT_EVERY seconds and when the second
    changes (`flush`, also before a slow-down and when the batch ends), not once per message."""

    def __init__(self, redis: Redis, key: str, per_second: float) -> None:
        self.redis = redis
        self.key = key
        self.configured = per_second
        self._lock = threading.Lock()
        self._set(per_second)
        self._read_at = 0.0
        self._counted = 0  # messages of `_counted_second` not yet added up in Redis
        self._counted_second = 0
        self._counted_at = 0.0

    def _set(self, per_second: float) -> None:
        limit = int(per_second) if per_second >= 1 else (1 if per_second > 0 else 0)
        period = 1.0 if per_second >= 1 or per_second <= 0 else 1.0 / per_second
        with self._lock:
            self.rate, self.limit, self.period = per_second, limit, period

    def _take_count(self, mono: float) -> tuple[int, int]:
        """What was counted and not yet added up (caller holds the lock)."""
        taken = (self._counted, self._counted_second)
        self._counted, self._counted_at = 0, mono
        return taken

    def _add(self, count: int, second: int) -> None:
        if count:
            k = f"sb:rate:{self.key}:{second}"
            pipe = self.redis.pipeline()
            pipe.incrby(k, count)
            pipe.expire(k, 3)
            pipe.execute()

    def flush(self) -> None:
        """Add what was counted to its second's counter in Redis."""
        with self._lock:
            count, second = self._take_count(time.monotonic())
        self._add(count, second)

    def slow_down(self) -> float:
        self.flush()  # the pace to halve includes this sender's own messages
        rate = slow_down(self.redis, self.key, self.configured)
        self._set(rate)
        self._read_at = time.monotonic()
        return rate

    def wait(self) -> None:
        mono = time.monotonic()
        with self._lock:
            read = mono - self._read_at >= READ_EVERY
            if read:
                self._read_at = mono
        if read:
            self._set(current_rate(self.redis, self.key, self.configured))
        if not self.limit:
            # No limit: only counted, so a slow-down reply knows the pace it halves.
            second = int(time.time())
            due: list[tuple[int, int]] = []
            with self._lock:
                if second != self._counted_second:
                    due.append(self._take_count(mono))
                    self._counted_second = second
                self._counted += 1
                if mono - self._counted_at >= COUNT_EVERY:
                    due.append(self._take_count(mono))
            for count, at in due:
                self._add(count, at)
            return
        while True:
            now = time.time()
            period, limit = self.period, self.limit
            window = int(now // period)
            k = f"sb:rate:{self.key}:{window}"
            pipe = self.redis.pipeline()
            pipe.incr(k)
            pipe.expire(k, int(period) + 2)
            count = pipe.execute()[0]
            if count <= limit:
                return
            time.sleep(max(0.001, (window + 1) * period - now))

"""The per-message hand-off record of a batch in flight, kept in Redis.

Before a message's DATA the sender appends ``h:<recipient>``; after the server's 250 it appends
``s:<recipient>:<message id>`` (both in one round trip with the next ``h:``). If the worker dies,
the reconciler reads the list: recorded 250s were sent, the one recipient handed off without a
250 is ambiguous (Unknown), the rest were never tried.

Every append runs as a script that refuses to write once the batch is fenced (taken over by the
reconciler) or when its list has vanished (Redis lost its data): the sender then stops at once,
so no message can leave after someone else has settled the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis

LEDGER_TTL = 7 * 24 * 3600
ALIVE_TTL = 10  # seconds without a heartbeat before a batch counts as abandoned

_APPEND = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
redis.call('RPUSH', KEYS[1], unpack(ARGV))
return 1
"""


class LedgerRefused(Exception):
    """The batch was fenced or its record lost: the sender must stop and not flush."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "fenced" | "lost"


def _key(batch_id: int) -> str:
    return f"sb:ledger:{batch_id}"


def _fence(batch_id: int) -> str:
    return f"sb:fence:{batch_id}"


def _alive(batch_id: int) -> str:
    return f"sb:alive:{batch_id}"


class Ledger:
    """The sender's side: open, append, heartbeat, close."""

    def __init__(self, redis: Redis, batch_id: int) -> None:
        self.redis = redis
        self.batch_id = batch_id
        self.key = _key(batch_id)
        self._append = redis.register_script(_APPEND)

    def open(self) -> None:
        """Create the record; called before the claim commits, so a claim always has one."""
        pipe = self.redis.pipeline()
        pipe.rpush(self.key, "b")
        pipe.expire(self.key, LEDGER_TTL)
        pipe.set(_alive(self.batch_id), 1, ex=ALIVE_TTL)
        pipe.execute()

    def append(self, *entries: str) -> None:
        result = self._append(keys=[self.key, _fence(self.batch_id)], args=list(entries))
        if result == -1:
            raise LedgerRefused("fenced")
        if result == -2:
            raise LedgerRefused("lost")

    def heartbeat(self) -> None:
        self.redis.set(_alive(self.batch_id), 1, ex=ALIVE_TTL)

    def close(self) -> None:
        self.redis.delete(self.key, _alive(self.batch_id))


@dataclass
class Settlement:
    """What the record says happened in a batch whose sender is gone."""

    sent: dict[int, str] = field(default_factory=dict)  # recipient id -> message id
    ambiguous: set[int] = field(default_factory=set)
    lost: bool = False  # no record at all: every recipient of the batch is ambiguous


def is_alive(redis: Redis, batch_id: int) -> bool:
    return bool(redis.exists(_alive(batch_id)))


def fence_and_read(redis: Redis, batch_id: int) -> Settlement:
    """Stop any sender still holding the batch, then read its record."""
    redis.set(_fence(batch_id), 1, ex=LEDGER_TTL)
    entries = [e.decode() for e in redis.lrange(_key(batch_id), 0, -1)]
    result = Settlement()
    if not entries:
        result.lost = True
        return result
    handing: set[int] = set()
    for entry in entries:
        kind, _, rest = entry.partition(":")
        if kind == "h":
            handing.add(int(rest))
        elif kind == "s":
            rid, _, message_id = rest.partition(":")
            result.sent[int(rid)] = message_id
            handing.discard(int(rid))
    result.ambiguous = handing
    return result


def discard(redis: Redis, batch_id: int) -> None:
    redis.delete(_key(batch_id), _alive(batch_id), _fence(batch_id))

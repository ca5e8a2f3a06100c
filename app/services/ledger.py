"""The per-message hand-off record of a batch in flight, kept in Redis.

This module owns the entry format both ways: the sender builds entries with the writers below and
the reconciler reads them back with `fence_and_read`. A batch's list holds, in order:

- ``b``: the record exists (written when the batch is claimed);
- ``h:<recipient>``: handing off, appended before the message's DATA;
- ``s:<recipient>:<unix time>:<message id>``: the server answered 250;
- ``r:<recipient>:<response>:<reply>``: the server refused the message (a permanent refusal, or a
  temporary one: the response is then Deferred, or a Soft bounce past the maximum age), with the
  response it gave the recipient and the reply.

A batch sent over several SMTP connections has one list: each connection appends its own entries,
and its ``s:`` and ``r:`` entries travel in one round trip with its next ``h:``. If the worker dies, the
reconciler reads the list: recorded 250s were sent, recorded refusals keep their response, the one
recipient handed off without an answer is ambiguous (Unknown), the rest were never tried.

Every append runs as a script that refuses to write once the batch is fenced (taken over by the
reconciler) or when its list has vanished (Redis lost its data): the sender then stops at once,
so no message can leave after someone else has settled the batch.

Redis keeps the list in an append-only file, so a restart keeps it. Should it be lost anyway, the
sender's partial flushes to the database (every second, with the bound it may hand off to before
the next one: `_Progress` in app/services/sending/batch.py) leave only that last second in doubt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.domain.responses import Response

LEDGER_TTL = 7 * 24 * 3600
ALIVE_TTL = 8  # seconds without a heartbeat (sent every second) before a batch is abandoned
REPLY_LIMIT = 500  # characters of a refusal's reply kept in its entry

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


# ---------------------------------------------------------------- entries, written


def handing_off_entry(recipient_id: int) -> str:
    """Appended before the message's DATA: from here on it may reach the recipient."""
    return f"h:{recipient_id}"


def sent_entry(recipient_id: int, at: datetime, message_id: str) -> str:
    """The server accepted the message (250) at `at` (whole seconds) under `message_id`."""
    return f"s:{recipient_id}:{int(at.timestamp())}:{message_id}"


def refused_entry(recipient_id: int, response: Response, reply: str) -> str:
    """The server refused the message; the recipient's response is `response`."""
    return f"r:{recipient_id}:{response.value}:{reply[:REPLY_LIMIT]}"


class Ledger:
    """The sender's side: open, append, heartbeat, close."""

    def __init__(self, redis: Redis, batch_id: int) -> None:
        self.redis = redis
        self.batch_id = batch_id
        self.key = _key(batch_id)
        self.fence = _fence(batch_id)
        self._append = redis.register_script(_APPEND)

    def open(self) -> None:
        """Create the record; called before the claim commits, so a claim always has one."""
        pipe = self.redis.pipeline()
        pipe.rpush(self.key, "b")
        pipe.expire(self.key, LEDGER_TTL)
        pipe.set(_alive(self.batch_id), 1, ex=ALIVE_TTL)
        pipe.execute()

    def append(self, *entries: str) -> None:
        _check(self._append(keys=[self.key, self.fence], args=list(entries)))

    def appender(self) -> Appender:
        """A writer for one sender thread (see Appender); close it when the thread ends."""
        return Appender(self)

    def heartbeat(self) -> None:
        self.redis.set(_alive(self.batch_id), 1, ex=ALIVE_TTL)

    def close(self) -> None:
        self.redis.delete(self.key, _alive(self.batch_id))


def _check(result: object) -> None:
    if result == -1:
        raise LedgerRefused("fenced")
    if result == -2:
        raise LedgerRefused("lost")


class Appender:
    """One sender thread's appends, over a Redis connection it holds for the whole batch.

    The shared client checks a connection out of its pool for every command, and checks it with
    an extra system call each time; a thread that appends before every message saves both with a
    connection of its own. A broken connection or a script Redis no longer knows (after a
    restart) falls back to the shared client's `Ledger.append`, with its retries and script
    loading; an append that reached Redis before its connection broke is then written twice,
    which the reader takes as once.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.conn: Any = None  # a redis-py Connection of the shared client's pool

    def append(self, *entries: str) -> None:
        ledger = self.ledger
        try:
            if self.conn is None:
                self.conn = ledger.redis.connection_pool.get_connection()
            self.conn.send_command("EVALSHA", ledger._append.sha, 2, ledger.key, ledger.fence,
                                   *entries)
            result = self.conn.read_response()
        except (RedisConnectionError, RedisTimeoutError, NoScriptError, OSError) as exc:
            self.close(broken=not isinstance(exc, NoScriptError))
            ledger.append(*entries)
            return
        _check(result)

    def close(self, broken: bool = False) -> None:
        """Give the connection back (dropped first when it broke mid-command)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if broken:
            conn.disconnect()
        self.ledger.redis.connection_pool.release(conn)


# ---------------------------------------------------------------- entries, read


@dataclass
class Settlement:
    """What the record says happened in a batch whose sender is gone."""

    sent: dict[int, tuple[str, datetime]] = field(default_factory=dict)  # id -> message id, time
    refused: dict[int, tuple[Response, str]] = field(default_factory=dict)  # id -> response, reply
    ambiguous: set[int] = field(default_factory=set)  # handed off, no answer recorded
    lost: bool = False  # no record at all: whatever the sender may have handed off is ambiguous


def is_alive(redis: Redis, batch_id: int) -> bool:
    return bool(redis.exists(_alive(batch_id)))


def read(entries: list[str]) -> Settlement:
    """Parse a batch's entries (see the module docstring); an empty list means the record is lost.

    An ``r:`` entry without a response (written before refusals carried one) was still refused by
    the server, so it settles as a delivery error, not as Unknown.
    """
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
            rid, _, rest = rest.partition(":")
            stamp, _, message_id = rest.partition(":")
            result.sent[int(rid)] = (message_id, datetime.fromtimestamp(int(stamp), UTC))
            handing.discard(int(rid))
        elif kind == "r":
            rid, _, rest = rest.partition(":")
            value, _, reply = rest.partition(":")
            try:
                response = Response(value)
            except ValueError:
                response = Response.PLANNED
            if response in (Response.PLANNED, Response.SENT):  # not a refusal's response
                response, reply = Response.DELIVERY_ERROR, reply or "refused by the SMTP server"
            result.refused[int(rid)] = (response, reply)
            handing.discard(int(rid))
    result.ambiguous = handing
    return result


def fence_and_read(redis: Redis, batch_id: int) -> Settlement:
    """Stop any sender still holding the batch, then read its record."""
    redis.set(_fence(batch_id), 1, ex=LEDGER_TTL)
    return read([e.decode() for e in redis.lrange(_key(batch_id), 0, -1)])


def exists(redis: Redis, batch_id: int) -> bool:
    """Is the batch's record still there (Redis did not lose it)?"""
    return bool(redis.exists(_key(batch_id)))


def discard(redis: Redis, batch_id: int) -> None:
    redis.delete(_key(batch_id), _alive(batch_id), _fence(batch_id))

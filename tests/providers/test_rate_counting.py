"""An unlimited sender's count of messages per second, which a slow-down reply halves."""

from __future__ import annotations

import time

from app.providers import rate
from app.providers.rate import RateLimiter


def _counter(redis_conn, key: str, second: int) -> int:
    return int(redis_conn.get(f"sb:rate:{key}:{second}") or 0)


def _start_of_a_second() -> int:
    """Wait for a fresh second with most of it left, so a run of waits stays inside it."""
    now = time.time()
    if now - int(now) > 0.5:
        time.sleep(int(now) + 1 - now)
    return int(time.time())


def test_every_message_of_two_senders_is_counted_in_its_second(redis_conn):
    first, second = RateLimiter(redis_conn, "pace", 0), RateLimiter(redis_conn, "pace", 0)
    at = _start_of_a_second()
    for _ in range(25):
        first.wait()
    for _ in range(12):
        second.wait()
    assert int(time.time()) == at  # else the run crossed a second and the figures below split
    first.flush()
    second.flush()
    assert _counter(redis_conn, "pace", at) == 37
    first.flush()  # nothing left to add
    assert _counter(redis_conn, "pace", at) == 37


def test_a_new_second_adds_the_previous_seconds_count(redis_conn):
    limiter = RateLimiter(redis_conn, "pace2", 0)
    at = _start_of_a_second()
    for _ in range(9):
        limiter.wait()
    time.sleep(int(time.time()) + 1.01 - time.time())
    limiter.wait()
    assert _counter(redis_conn, "pace2", at) == 9  # added when the second changed


def test_a_slow_down_halves_a_pace_that_includes_the_senders_own_messages(redis_conn):
    limiter = RateLimiter(redis_conn, "pace3", 0)
    at = _start_of_a_second()
    for _ in range(40):
        limiter.wait()
    assert int(time.time()) == at
    time.sleep(int(time.time()) + 1.01 - time.time())
    # The 40 of the last second, however many the sender still held, are the pace halved.
    assert limiter.slow_down() == 20.0
    assert rate.read_cut(redis_conn, "pace3").before == 40.0


def test_one_limiter_shared_by_threads_counts_every_message(redis_conn):
    """A batch's connections share one limiter: no message of any thread is lost or counted
    twice, and the count reaches Redis in a few writes, not one per message."""
    import threading

    limiter = RateLimiter(redis_conn, "pace4", 0)
    at = _start_of_a_second()
    writes = []
    original = limiter._add

    def counting_add(count, second):  # type: ignore[no-untyped-def]
        writes.append(count)
        original(count, second)

    limiter._add = counting_add  # type: ignore[method-assign]
    threads = [threading.Thread(target=lambda: [limiter.wait() for _ in range(50)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(time.time()) == at
    limiter.flush()
    assert _counter(redis_conn, "pace4", at) == 400
    assert sum(writes) == 400 and len([w for w in writes if w]) < 20

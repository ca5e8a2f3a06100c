from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.runtime.redis_server import EmbeddedRedis


def test_embedded_redis_starts_serves_and_stops(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        assert server.url == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
        conn = Redis.from_url(server.url)
        conn.set("greeting", "hello")
        assert conn.get("greeting") == b"hello"
        process = server.process
        assert process is not None and process.poll() is None
    finally:
        server.stop()
    assert process.poll() is not None
    with pytest.raises((RedisConnectionError, FileNotFoundError)):
        Redis.from_url(server.url).ping()
    conn.close()


def test_embedded_redis_restarts_on_the_same_socket(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        url = first.url
    with EmbeddedRedis(tmp_path) as second:
        assert second.url == url
        conn = Redis.from_url(url)
        assert conn.ping()
        conn.close()


def test_embedded_redis_keeps_its_data_across_a_crash(tmp_path: Path) -> None:
    """An append-only file synced every second: a hand-off ledger outlives a killed server."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        conn = Redis.from_url(server.url)
        config = conn.config_get("append*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        conn.rpush("sb:ledger:7", "b", "h:1", "s:1:1700000000:<m1@x>", "h:2")
        conn.set("sb:fence:8", 1, ex=600)
        # With everysec, Redis may hold its AOF buffer back (up to 2 s) while the previous
        # second's fsync runs on a busy disk: the loss a restart may cost. Once the buffer is
        # written to the file, a killed process loses nothing of it.
        deadline = time.monotonic() + 10
        while conn.info("persistence")["aof_buffer_length"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.info("persistence")["aof_buffer_length"] == 0
        conn.close()
        server.kill()  # SIGKILL: no shutdown save
        server.start()
        conn = Redis.from_url(server.url)
        assert conn.lrange("sb:ledger:7", 0, -1) == [b"b", b"h:1", b"s:1:1700000000:<m1@x>",
                                                     b"h:2"]
        assert 0 < conn.ttl("sb:fence:8") <= 600
        conn.close()
        server.stop()
        server.wipe()  # what a Redis without persistence would come back with
        server.start()
        conn = Redis.from_url(server.url)
        assert conn.dbsize() == 0
        conn.close()
    finally:
        server.stop()

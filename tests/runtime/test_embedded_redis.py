from __future__ import annotations

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

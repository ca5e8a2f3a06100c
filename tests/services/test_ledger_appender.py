"""A sender thread's own ledger connection: the same entries and refusals as the shared
client, and a fall back to it when its connection breaks or Redis forgot the script."""

from __future__ import annotations

import pytest

from app.services import ledger as ledger_mod
from app.services.ledger import Ledger, LedgerRefused, fence_and_read


def _entries(redis_conn, batch_id: int) -> list[str]:
    return [e.decode() for e in redis_conn.lrange(f"sb:ledger:{batch_id}", 0, -1)]


def _own_connection_name(redis_conn, appender) -> None:
    appender.conn.send_command("CLIENT", "SETNAME", "sb-appender")
    assert appender.conn.read_response() in (b"OK", "OK")


def test_entries_land_in_order_and_the_connection_goes_back(redis_conn):
    ledger = Ledger(redis_conn, 71)
    ledger.open()
    appender = ledger.appender()
    appender.append("h:1")
    appender.append("s:1:1700000000:m1@x", "h:2")
    held = appender.conn
    assert held is not None and held not in redis_conn.connection_pool._available_connections
    appender.close()
    assert appender.conn is None and held in redis_conn.connection_pool._available_connections
    assert _entries(redis_conn, 71) == ["b", "h:1", "s:1:1700000000:m1@x", "h:2"]
    settled = fence_and_read(redis_conn, 71)
    assert set(settled.sent) == {1} and settled.ambiguous == {2}


def test_a_fenced_or_lost_record_refuses_the_append(redis_conn):
    ledger = Ledger(redis_conn, 72)
    ledger.open()
    appender = ledger.appender()
    appender.append("h:1")
    fence_and_read(redis_conn, 72)
    with pytest.raises(LedgerRefused) as fenced:
        appender.append("h:2")
    assert fenced.value.reason == "fenced"
    lost = Ledger(redis_conn, 73).appender()  # never opened: no record
    with pytest.raises(LedgerRefused) as gone:
        lost.append("h:1")
    assert gone.value.reason == "lost"
    appender.close()
    lost.close()
    assert "h:2" not in _entries(redis_conn, 72)


def test_a_killed_connection_falls_back_to_the_shared_client(redis_conn):
    ledger = Ledger(redis_conn, 74)
    ledger.open()
    appender = ledger.appender()
    appender.append("h:1")
    _own_connection_name(redis_conn, appender)
    killed = [c for c in redis_conn.client_list() if c.get("name") == "sb-appender"]
    assert len(killed) == 1
    redis_conn.execute_command("CLIENT", "KILL", "ID", killed[0]["id"])
    appender.append("s:1:1700000000:m1@x", "h:2")  # over the shared client
    assert appender.conn is None
    appender.append("h:3")  # and a fresh connection of its own after that
    assert appender.conn is not None
    appender.close()
    assert _entries(redis_conn, 74) == ["b", "h:1", "s:1:1700000000:m1@x", "h:2", "h:3"]


def test_a_script_redis_forgot_is_loaded_again(redis_conn):
    ledger = Ledger(redis_conn, 75)
    ledger.open()
    appender = ledger.appender()
    appender.append("h:1")
    redis_conn.script_flush()  # what a restart without the script cache looks like
    appender.append("h:2")
    appender.append("h:3")
    appender.close()
    assert _entries(redis_conn, 75) == ["b", "h:1", "h:2", "h:3"]
    assert ledger_mod.read(_entries(redis_conn, 75)).ambiguous == {1, 2, 3}

"""Message-IDs: unique, unpredictable suffixes drawn from the OS's random source in bulk."""

from __future__ import annotations

import os
import threading

from app.services import rendering
from app.services.rendering import new_message_id


def test_ids_are_unique_across_threads_and_refills():
    ids: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        mine = [new_message_id(7, "example.org") for _ in range(3000)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 12000 == len(set(ids))  # 72,000 random bytes: many refills
    assert all(i.startswith("r7.") and i.endswith("@example.org") and len(i) == 27 for i in ids)


def test_a_forked_child_draws_its_own_bytes():
    rendering._random.take(1)  # the parent holds an unused supply
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next id and leave at once
        os.write(write, new_message_id(1, "x").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child != new_message_id(1, "x")
    assert rendering._random._at > 0

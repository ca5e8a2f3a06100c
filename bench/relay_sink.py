"""A small SMTP sink on asyncio for the sending bench, standing in for a relay at a distance.

    python bench/relay_sink.py [--latency-ms MS] [--defer PERCENT] [--track] [--port P]

It accepts every message, serves any number of connections at once, announces PIPELINING (as
Postfix does) and answers the end of each message's DATA only after MS milliseconds: the time a
relay across a network takes to queue a message. With --defer P it refuses for now (451 4.7.1)
the first attempt of P% of the recipient addresses (chosen by a hash of the address, so the same
ones every run) and accepts every later attempt. --track counts the copies each address received,
so a bench can check that each arrived exactly once.

It runs in a process of its own, so the bench's threads and the sink do not share one
interpreter. Control is a line protocol on stdin/stdout: it prints `ready PORT` once listening;
`stat` answers one JSON line of counters, `reset` clears them, end of input stops it.
`RelaySink` below starts and drives it from the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

EHLO_REPLY = (b"250-relay-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
              b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n")
DEFER_REPLY = b"451 4.7.1 Try again later\r\n"


class Stats:
    def __init__(self, track: bool) -> None:
        self.track = track
        self.reset()

    def reset(self) -> None:
        self.received = 0  # messages accepted (250 after DATA)
        self.deferred = 0  # recipients refused for now
        self.connections = 0  # connections opened
        self.open = 0  # connections open now
        self.peak_open = 0  # most connections open at once
        self.attempts: dict[bytes, int] = {}
        self.copies: dict[bytes, int] = {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received, "deferred": self.deferred,
            "connections": self.connections, "peak_open": self.peak_open,
            "distinct": len(self.copies),
            "duplicates": sum(1 for n in self.copies.values() if n > 1),
        }


class Session(asyncio.Protocol):
    """One SMTP connection: commands line by line, the message up to <CRLF>.<CRLF>."""

    def __init__(self, stats: Stats, latency: float, defer: int) -> None:
        self.stats = stats
        self.latency = latency
        self.defer = defer
        self.buf = bytearray()
        self.in_data = False
        self.scanned = 0
        self.held = False  # a delayed reply is pending: read nothing further until it is sent
        self.rcpts: list[bytes] = []
        self.replies: list[bytes] = []  # written together once the input at hand is read
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1
        self.stats.open += 1
        self.stats.peak_open = max(self.stats.peak_open, self.stats.open)
        transport.write(b"220 relay-sink ESMTP\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    def _write(self, reply: bytes) -> None:
        self.replies.append(reply)

    def _process(self) -> None:
        try:
            self._read()
        finally:
            if self.replies and self.transport is not None:
                self.transport.write(b"".join(self.replies))
            self.replies.clear()

    def _read(self) -> None:
        buf = self.buf
        while not self.held and self.transport is not None:
            if self.in_data:
                if self.scanned == 0 and buf.startswith(b".\r\n"):
                    end = 3
                else:
                    i = buf.find(b"\r\n.\r\n", max(self.scanned - 4, 0))
                    if i < 0:
                        self.scanned = len(buf)
                        return
                    end = i + 5
                del buf[:end]
                self.in_data = False
                self.scanned = 0
                self._message()
                continue
            i = buf.find(b"\r\n")
            if i < 0:
                if len(buf) > 4096:
                    self._write(b"500 5.5.2 Line too long\r\n")
                    del buf[:]
                return
            line = bytes(buf[:i])
            del buf[:i + 2]
            self._command(line)

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self._write(EHLO_REPLY)
        elif verb == b"HELO":
            self._write(b"250 relay-sink\r\n")
        elif verb == b"MAIL":
            self.rcpts = []
            self._write(b"250 2.1.0 Ok\r\n")
        elif verb == b"RCPT":
            self._rcpt(line)
        elif verb == b"DATA":
            if not self.rcpts:
                self._write(b"554 5.5.1 Error: no valid recipients\r\n")
            else:
                self.in_data = True
                self._write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"RSET":
            self.rcpts = []
            self._write(b"250 2.0.0 Ok\r\n")
        elif verb == b"NOOP":
            self._write(b"250 2.0.0 Ok\r\n")
        elif verb == b"QUIT":
            if self.transport is not None:
                self.transport.write(b"".join(self.replies) + b"221 2.0.0 Bye\r\n")
                self.replies.clear()
                self.transport.close()
        else:
            self._write(b"502 5.5.2 Error: command not recognized\r\n")

    def _rcpt(self, line: bytes) -> None:
        start, end = line.find(b"<"), line.find(b">")
        address = line[start + 1:end].lower() if 0 <= start < end else line[8:].strip().lower()
        stats = self.stats
        if self.defer:
            n = stats.attempts[address] = stats.attempts.get(address, 0) + 1
            if n == 1 and zlib.crc32(address) % 100 < self.defer:
                stats.deferred += 1
                self._write(DEFER_REPLY)
                return
        self.rcpts.append(address)
        self._write(b"250 2.1.5 Ok\r\n")

    def _message(self) -> None:
        rcpts, self.rcpts = self.rcpts, []
        if self.latency <= 0:
            self._accept(rcpts)
            return
        self.held = True
        asyncio.get_running_loop().call_later(self.latency, self._release, rcpts)

    def _release(self, rcpts: list[bytes]) -> None:
        self.held = False
        if self.transport is None:  # the client went away before the reply: not accepted
            return
        self._accept(rcpts)
        self._process()

    def _accept(self, rcpts: list[bytes]) -> None:
        stats = self.stats
        stats.received += 1
        if stats.track:
            for address in rcpts:
                stats.copies[address] = stats.copies.get(address, 0) + 1
        self._write(b"250 2.0.0 Ok: queued\r\n")


async def serve(host: str, port: int, latency_ms: float, defer: int, track: bool) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats(track or defer > 0)
    server = await loop.create_server(lambda: Session(stats, latency_ms / 1000.0, defer),
                                      host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"ready {bound}\n")
    sys.stdout.flush()
    done = loop.create_future()

    def control() -> None:
        line = sys.stdin.readline()
        if not line:
            loop.remove_reader(sys.stdin.fileno())
            if not done.done():
                done.set_result(None)
            return
        command = line.strip()
        if command == "reset":
            stats.reset()
            sys.stdout.write("{}\n")
        else:
            sys.stdout.write(json.dumps(stats.as_dict()) + "\n")
        sys.stdout.flush()

    loop.add_reader(sys.stdin.fileno(), control)
    async with server:
        await done


class RelaySink:
    """The sink in a process of its own, driven from the bench: `port`, `received()`,
    `stat()`, `reset()`, `stop()`."""

    def __init__(self, latency_ms: float = 0.0, defer: int = 0, track: bool = False) -> None:
        self.latency_ms = latency_ms
        self.defer = defer
        args = [sys.executable, str(Path(__file__).resolve()), "--latency-ms", str(latency_ms),
                "--defer", str(defer)] + (["--track"] if track else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        line = self._out.readline().split()
        if len(line) != 2 or line[0] != "ready":
            self.stop()
            raise RuntimeError("the relay sink did not start")
        self.port = int(line[1])

    def _ask(self, command: str) -> dict[str, Any]:
        self._in.write(command + "\n")
        self._in.flush()
        answer: dict[str, Any] = json.loads(self._out.readline())
        return answer

    def stat(self) -> dict[str, Any]:
        return self._ask("stat")

    def received(self) -> int:
        return int(self.stat()["received"])

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self._in.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--defer", type=int, default=0, metavar="PERCENT")
    parser.add_argument("--track", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, max(0.0, args.latency_ms),
                      max(0, min(100, args.defer)), args.track))


if __name__ == "__main__":
    main()

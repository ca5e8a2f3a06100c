"""The local capture SMTP server: accepts every message and keeps it, so no mail leaves the machine.

Each message is stored byte-for-byte as its DATA arrived (after SMTP dot-unstuffing, with the CRLF
line endings of the wire) in a Maildir, and one JSON line per message is appended to ``index.jsonl``
next to it: time, envelope sender, envelope recipients, file name, Message-ID, subject and size. The
envelope lives only in the index, never added to the message, so what was sent can be compared with
what arrived exactly. Staff list captured mail from the index without opening thousands of files,
and tests count copies per address from the server's own record.

Mail to the bounce domain (DSNs addressed to the VERP return path) goes to a second Maildir,
``bounces/`` beside the capture one, which the bounce processor reads.

Run it standalone (the tests start, kill and restart it as a separate process)::

    python -m app.runtime.capture --dir instance/capture --port 2525 --bounce-domain bounces.example

or in-process with ``CaptureServer(...).start()`` / ``.stop()``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

INDEX_NAME = "index.jsonl"
DEFAULT_HOST = "127.0.0.1"
# Large newsletters with inline images stay well below this; the default 32 MB is the same order.
DATA_SIZE_LIMIT = 64 * 1024 * 1024

_HOSTNAME = socket.gethostname().replace("/", "_").replace(":", "_")
_sequence = itertools.count()
_sequence_lock = threading.Lock()


@dataclass(frozen=True)
class CapturedMessage:
    """One entry of the index: the envelope and a few headers of a stored message."""

    time: float
    mail_from: str
    recipients: tuple[str, ...]
    file: str
    message_id: str
    subject: str
    size: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CapturedMessage:
        return cls(
            time=float(data["time"]),
            mail_from=str(data["from"]),
            recipients=tuple(data["to"]),
            file=str(data["file"]),
            message_id=str(data.get("message_id", "")),
            subject=str(data.get("subject", "")),
            size=int(data.get("size", 0)),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": round(self.time, 6),
                "from": self.mail_from,
                "to": list(self.recipients),
                "file": self.file,
                "message_id": self.message_id,
                "subject": self.subject,
                "size": self.size,
            },
            ensure_ascii=False,
        )


def _decode(value: Any) -> str:
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        return str(value)


def _summary_headers(raw: bytes) -> tuple[str, str]:
    """Message-ID and decoded Subject, parsing only the header block (cheap at 1,000 msgs/s)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw if end < 0 else raw[: end + 2]
    headers = BytesHeaderParser(policy=compat32).parsebytes(head)
    message_id = _decode(headers.get("Message-ID")).strip()
    subject = " ".join(_decode(headers.get("Subject")).split())
    return message_id, subject


class MaildirWriter:
    """Writes messages into one Maildir (tmp/ then rename to new/) and appends to its index."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        for sub in ("tmp", "new", "cur"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self.index_path = self.directory / INDEX_NAME
        # O_APPEND makes each single write of a whole line atomic with respect to readers.
        self._index_fd = os.open(self.index_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def store(self, raw: bytes, mail_from: str, recipients: list[str]) -> CapturedMessage:
        """Store one message and index it; returns the index entry."""
        now = time.time()
        with _sequence_lock:
            seq = next(_sequence)
        name = f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}Q{seq}.{_HOSTNAME}"
        tmp = self.directory / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(raw)
        # The rename is what makes the message visible: readers never see half a file.
        os.rename(tmp, self.directory / "new" / name)
        message_id, subject = _summary_headers(raw)
        entry = CapturedMessage(
            time=now,
            mail_from=mail_from,
            recipients=tuple(recipients),
            file=name,
            message_id=message_id,
            subject=subject,
            size=len(raw),
        )
        os.write(self._index_fd, (entry.to_json() + "\n").encode("utf-8"))
        return entry

    def close(self) -> None:
        if self._index_fd >= 0:
            os.close(self._index_fd)
            self._index_fd = -1


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(">").lower()


class CaptureHandler:
    """aiosmtpd handler: accepts every recipient and stores each message before answering 250."""

    def __init__(
        self, capture_dir: Path | str, *, bounce_dir: Path | str | None = None,
        bounce_domain: str = "",
    ) -> None:
        self.capture = MaildirWriter(capture_dir)
        self.bounce_domain = bounce_domain.strip().lower()
        self.bounces: MaildirWriter | None = None
        if self.bounce_domain:
            self.bounces = MaildirWriter(bounce_dir or Path(capture_dir).parent / "bounces")
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        # The null reverse-path (bounces, DSNs) is recorded as "", not as aiosmtpd's "<>".
        mail_from = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
        to_bounce = [r for r in envelope.rcpt_tos if self._is_bounce(r)]
        to_capture = [r for r in envelope.rcpt_tos if not self._is_bounce(r)]
        # Written before the 250: a message the client saw accepted is always on disk.
        if to_capture:
            self.capture.store(raw, mail_from, to_capture)
        if to_bounce and self.bounces is not None:
            self.bounces.store(raw, mail_from, to_bounce)
        self.received += 1
        return "250 Message accepted for delivery"

    def _is_bounce(self, address: str) -> bool:
        return bool(self.bounce_domain) and _domain(address) == self.bounce_domain

    def close(self) -> None:
        self.capture.close()
        if self.bounces is not None:
            self.bounces.close()


class CaptureServer:
    """The capture SMTP server on a local port, running in a background thread of this process."""

    def __init__(
        self, directory: Path | str, *, host: str = DEFAULT_HOST, port: int = 2525,
        bounce_domain: str = "", bounce_dir: Path | str | None = None,
    ) -> None:
        if port <= 0:
            # aiosmtpd's readiness check connects to the port it was given, so 0 cannot work.
            raise ValueError("the capture server needs a fixed port (port 0 is not supported)")
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.handler = CaptureHandler(
            self.directory, bounce_dir=bounce_dir, bounce_domain=bounce_domain
        )
        self.controller = Controller(
            self.handler, hostname=host, port=port, ready_timeout=10.0,
            server_hostname="sendboard-capture", data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True, decode_data=False,
        )

    def start(self) -> CaptureServer:
        """Listen; returns once the server answers."""
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the index files."""
        try:
            self.controller.stop()
        finally:
            self.handler.close()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CaptureStore:
    """Read side of a capture (or bounce) Maildir: the index and the stored bytes."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_NAME

    def messages(self) -> Iterator[CapturedMessage]:
        """Index entries, oldest first; a line still being written is skipped."""
        try:
            fh = open(self.index_path, "rb")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    yield CapturedMessage.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue

    def count(self) -> int:
        """How many messages the index holds."""
        return sum(1 for _ in self.messages())

    def newest(
        self, *, offset: int = 0, limit: int = 50, search: str = ""
    ) -> list[CapturedMessage]:
        """A page of entries, newest first; `search` matches sender, recipients or subject."""
        needle = search.strip().lower()
        entries = [m for m in self.messages() if not needle or _matches(m, needle)]
        entries.reverse()
        return entries[offset : offset + limit]

    def count_matching(self, search: str = "") -> int:
        """How many entries `newest(search=...)` pages through."""
        needle = search.strip().lower()
        return sum(1 for m in self.messages() if not needle or _matches(m, needle))

    def find(self, file_name: str) -> CapturedMessage | None:
        """The index entry of one stored file, or None."""
        for entry in self.messages():
            if entry.file == file_name:
                return entry
        return None

    def path(self, file_name: str) -> Path:
        """Where a stored message is now: new/, or cur/ once a reader has marked it seen."""
        if (not file_name or len(file_name) > 200 or "/" in file_name or "\\" in file_name
                or "\x00" in file_name or file_name.startswith(".")):
            raise FileNotFoundError(file_name[:200])
        candidate = self.directory / "new" / file_name
        if candidate.exists():
            return candidate
        cur = self.directory / "cur"
        for found in cur.glob(f"{file_name}*") if cur.is_dir() else ():
            if found.name == file_name or found.name.startswith(file_name + ":"):
                return found
        raise FileNotFoundError(file_name)

    def raw(self, file_name: str) -> bytes:
        """The stored message, exactly as its DATA was received."""
        return self.path(file_name).read_bytes()

    def count_by_recipient(self) -> Counter[str]:
        """How many messages each envelope recipient received; addresses are lower-cased."""
        counts: Counter[str] = Counter()
        for entry in self.messages():
            counts.update(r.lower() for r in entry.recipients)
        return counts


def _matches(entry: CapturedMessage, needle: str) -> bool:
    return (
        needle in entry.mail_from.lower()
        or needle in entry.subject.lower()
        or any(needle in r.lower() for r in entry.recipients)
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Sendboard's local capture SMTP server.")
    parser.add_argument("--dir", required=True, help="the capture Maildir (created if missing)")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--bounce-domain", default="", help="recipients here go to the bounce box")
    parser.add_argument("--bounce-dir", default=None, help="default: 'bounces' beside --dir")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = CaptureServer(
        args.dir, host=args.host, port=args.port, bounce_domain=args.bounce_domain,
        bounce_dir=args.bounce_dir,
    )
    try:
        server.start()
    except Exception as exc:  # report any bind failure plainly and exit
        print(f"capture SMTP server could not start on {args.host}:{args.port}: {exc}",
              file=sys.stderr, flush=True)
        raise SystemExit(1) from exc
    print(f"capture SMTP server listening on {args.host}:{args.port}, storing in {args.dir}",
          flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
